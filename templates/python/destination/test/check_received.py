"""Checks what the receiver recorded (one JSON line per request): bodies of the form
{"operation": ..., "rows": [...]} holding at least one row. Usage: check_received.py FILE"""

import json
import sys

requests = rows = 0
with open(sys.argv[1], encoding="utf-8") as f:
    for line in f:
        received = json.loads(line)
        body = received["body"]
        if not (isinstance(body, dict) and body.get("operation") in ("insert", "update", "delete") and isinstance(body.get("rows"), list)):
            sys.exit(f"unexpected body: {line[:200]}")
        if not all(isinstance(r, dict) for r in body["rows"]):
            sys.exit(f"a row is not an object: {line[:200]}")
        requests += 1
        rows += len(body["rows"])
if rows == 0:
    sys.exit("the receiver got no rows")
print(f"the receiver got {rows} rows in {requests} requests")
