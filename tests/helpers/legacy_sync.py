"""A legacy script, as operations teams have them: plain ``requests`` calls, its
own token handling, its own exit codes. Run by tests/test_run.py, never edited."""

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
    headers = {"Authorization": "Bearer " + answer.json()["token"]}
    names = []
    for number in (1, 2, 3):
        url = f"{base}/api/v1/realestateobjects/complexes/{number}"
        response = requests.get(url, headers=headers, timeout=10)
        if response.status_code != 200:
            print(f"failed on {number}: {response.status_code}")
            return 4
        names.append(response.json()["name"])
    if "--crash" in sys.argv:
        raise RuntimeError("the script's own error")
    print("synced:", ", ".join(names), "| argv:", " ".join(sys.argv[2:]), "| name:", __name__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
