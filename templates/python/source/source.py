"""The reader of {{name}} (componentize-py looks for the `Reader` class in this module,
named after the contract's `source` interface)."""

import json

import backflow_sdk as bf
from backflow_sdk import host
from backflow_sdk.plugin import Error
from backflow_sdk.source import SourceReader

from app import CONFIG


class Reader(SourceReader):
    def __init__(self, config, query):
        self.config = CONFIG.load(config)
        self.cols = [bf.Column(c["name"], c["type"]) for c in self.config["columns"]]
        url = self.config["url"].rstrip("/") + query
        try:
            response = host.http_send("GET", url, headers={"Accept": "application/json"}, timeout_ms=30_000)
        except host.HttpFailure as e:
            if e.kind == "denied":
                raise Error.bad_config("url", e.detail)
            if e.transient:
                raise Error.retryable(f"{url}: {e.detail}")
            raise Error.fatal(e.detail)
        if not response.ok:
            error = f"{url} answered {response.status}: {response.body[:500].decode('utf-8', 'replace')}"
            raise Error.retryable(error) if response.status >= 500 else Error.fatal(error)
        try:
            objects = json.loads(response.body)
        except ValueError as e:
            raise Error.fatal(f"{url} did not answer JSON: {e}")
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise Error.fatal(f"{url} did not answer a JSON array of objects")
        self.objects = objects
        self.next = 0

    def columns(self):
        return self.cols

    def next_batch(self, max_rows):
        if self.next >= len(self.objects):
            return None
        rows = self.objects[self.next : self.next + max(1, max_rows)]
        self.next += len(rows)
        # Objects become rows by column name (missing fields are null); each value is
        # checked against its column's type, and one that does not fit is a bad-row error
        # naming the row and column.
        return rows
