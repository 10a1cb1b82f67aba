"""Verifies captured webhook requests with the official `standardwebhooks` package.

Usage: python verify_standard_webhooks.py REQUESTS.json

REQUESTS.json is a list of {"secrets": [...], "headers": {...}, "body": "..."}. Each
request must verify with each of its secrets on its own (what a receiver holding only
the old or only the new key during a rotation does), carry a `webhook-id` of ASCII
without `.`, and ASCII header values. Prints one line per failure and a summary;
exits 1 on any failure.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        requests = json.load(f)
    failures = 0
    checks = 0
    for index, request in enumerate(requests):
        headers = request["headers"]
        lowered = {k.lower(): v for k, v in headers.items()}
        msg_id = lowered.get("webhook-id", "")
        problems = []
        if not msg_id.isascii() or "." in msg_id or not msg_id:
            problems.append(f"webhook-id {msg_id!r} is not ASCII without '.'")
        for name, value in headers.items():
            if not value.isascii():
                problems.append(f"header {name} is not ASCII: {value!r}")
        for secret in request["secrets"]:
            checks += 1
            try:
                Webhook(secret).verify(request["body"], headers, json_parse=False)
            except Exception as error:  # noqa: BLE001 - report every kind
                problems.append(f"secret #{request['secrets'].index(secret)}: {type(error).__name__}: {error}")
        for problem in problems:
            failures += 1
            print(f"request {index} ({request.get('label', '')}): {problem}")
    print(f"standardwebhooks: {len(requests)} requests, {checks} signature checks, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
