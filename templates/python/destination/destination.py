"""The writer of {{name}} (componentize-py looks for the `Writer` class in this module,
named after the contract's `destination` interface)."""

import backflow_sdk as bf
from backflow_sdk import host
from backflow_sdk.destination import DestinationWriter, Outcome
from backflow_sdk.plugin import Error

from app import CONFIG


class Writer(DestinationWriter):
    def __init__(self, config, context):
        # A problem raises ConfigInvalid, which the SDK returns as bad-config naming the field.
        self.config = CONFIG.load(config)
        self.url = self.config["url"]
        self.headers = {}
        # `${env.NAME}` in a header is a secret the operator granted with grants.env.
        for name, value in self.config["headers"].items():
            try:
                self.headers[name] = bf.expand_secrets(value, "destination")
            except ValueError as e:
                raise Error.bad_config(f"headers.{name}", str(e))

    def write(self, op, batch):
        n = len(batch)
        if n == 0:
            return []
        body = {"operation": op, "rows": batch.dicts()}
        try:
            response = host.http_send("POST", self.url, headers=self.headers, json=body, timeout_ms=30_000)
        except host.HttpFailure as e:
            if e.kind == "denied":
                raise Error.bad_config("url", e.detail)
            if e.transient:
                raise Error.retryable(f"{self.url}: {e.detail}")
            raise Error.fatal(e.detail)
        text = response.body[:500].decode("utf-8", "replace")
        status = response.status
        if 200 <= status < 300:
            return [Outcome.accepted()] * n
        if status == 429:
            retry_after = response.header("retry-after", "").strip()
            ms = min(int(retry_after), 86_400) * 1000 if retry_after.isdigit() else None
            raise Error.rate_limited(f"{self.url} answered 429: {text}", retry_after_ms=ms)
        if 500 <= status < 600:
            raise Error.retryable(f"{self.url} answered {status}: {text}")
        if status in (401, 403):
            # Credentials are config: nothing will work until a human fixes them.
            raise Error.bad_config("headers", f"{self.url} answered {status}: {text}")
        return [Outcome.rejected(f"{self.url} answered {status}: {text}")] * n
