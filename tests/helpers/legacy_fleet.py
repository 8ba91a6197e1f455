"""A legacy cron job, as a fleet runs ten of them: its own token request, five reads,
its own exit status. Run by tests/tools/test_legacy_scripts.py, never edited."""

import os
import sys

import requests


def main() -> int:
    base = sys.argv[1]
    answer = requests.post(
        base + "/Authorization",
        json={"apiKey": os.environ["BLOXS_API_KEY"], "apiSecret": os.environ["BLOXS_API_SECRET"]},
        timeout=10,
    )
    if answer.status_code != 200:
        print("no token:", answer.status_code)
        return 3
    headers = {"Authorization": "Bearer " + answer.json()["token"]}
    for number in range(1, 6):
        response = requests.get(
            f"{base}/api/v1/realestateobjects/complexes/{number}", headers=headers, timeout=10
        )
        if response.status_code != 200:
            print(f"failed on {number}: {response.status_code}")
            return 4
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
