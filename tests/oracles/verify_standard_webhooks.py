"""Independent oracle: the official `standardwebhooks` package verifies what the gateway delivered.

Reads {"secret": "whsec_…", "deliveries": [{"headers": {…}, "body": "…"}]} on stdin and
prints, as a JSON list, each delivery's verified payload (Webhook.verify raises on a bad
signature, a stale timestamp or a missing header, and the script then exits non-zero).

usage: python verify_standard_webhooks.py < deliveries.json
"""

import json
import sys

import standardwebhooks


def main() -> None:
    given = json.load(sys.stdin)
    webhook = standardwebhooks.Webhook(given["secret"])
    verified = [webhook.verify(d["body"], d["headers"]) for d in given["deliveries"]]
    json.dump(verified, sys.stdout)


if __name__ == "__main__":
    main()
