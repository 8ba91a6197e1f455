"""A legacy script that creates records and checks each answer as it always did:
``python legacy_writer.py BASE COUNT``. Exit status 0 when every create went, 5
when the API refused or failed any. Run by tests/tools/test_legacy_scripts.py."""

import sys

import requests


def main() -> int:
    base, count = sys.argv[1], int(sys.argv[2])
    failed = []
    for number in range(1, count + 1):
        response = requests.post(
            base + "/api/v1/realestateobjects/complexes",
            json={"name": f"created by the job {number}"},
            timeout=10,
        )
        print(number, response.status_code)
        if response.status_code >= 400:
            failed.append(number)
    if failed:
        print("the API is down; failed:", failed)
        return 5
    return 0


if __name__ == "__main__":
    sys.exit(main())
