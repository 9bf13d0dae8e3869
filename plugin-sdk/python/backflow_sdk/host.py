"""What the host offers (`backflow:plugin/host@0.2.0`): logging, the clock and HTTP.

Needs the generated bindings (`wit_world`), which exist while componentize-py builds the
component; import it at the top of your modules (a module first imported inside a function
at run time is not in the component).

    from backflow_sdk import host
    host.info("opened")                      # or host.log("warn", "...")
    resp = host.http_send("POST", url, json={"a": 1}, headers={"X-Key": "..."})
    resp.status, resp.text, resp.json(), resp.header("retry-after")

A denied or failed request raises `HttpFailure` (kind "denied", "invalid-request",
"connection" or "timeout"); left uncaught in an export, connection and timeout failures
become `retryable` plugin errors and the others `fatal`.
"""

import json as _json

from componentize_py_types import Err
from wit_world.imports import host as _host

from .rows import json_dumps

__all__ = [
    "log",
    "trace",
    "debug",
    "info",
    "warn",
    "error",
    "now_ms",
    "http_send",
    "HttpResponse",
    "HttpFailure",
]

_LEVELS = {
    "trace": _host.LogLevel.TRACE,
    "debug": _host.LogLevel.DEBUG,
    "info": _host.LogLevel.INFO,
    "warn": _host.LogLevel.WARN,
    "warning": _host.LogLevel.WARN,
    "error": _host.LogLevel.ERROR,
}


def log(level, message):
    """Writes `message` to the engine's log at `level` ("trace" … "error")."""
    lvl = _LEVELS.get(level, level) if isinstance(level, str) else level
    if isinstance(lvl, str):
        lvl = _host.LogLevel.INFO
    _host.log(lvl, str(message))


def trace(message):
    _host.log(_host.LogLevel.TRACE, str(message))


def debug(message):
    _host.log(_host.LogLevel.DEBUG, str(message))


def info(message):
    _host.log(_host.LogLevel.INFO, str(message))


def warn(message):
    _host.log(_host.LogLevel.WARN, str(message))


def error(message):
    _host.log(_host.LogLevel.ERROR, str(message))


def now_ms():
    """Milliseconds since the Unix epoch (the host's wall clock)."""
    return _host.now_ms()


class HttpFailure(Exception):
    """The host could not send a request: `kind` is "denied", "invalid-request",
    "connection" or "timeout"."""

    def __init__(self, kind, message):
        super().__init__(f"HTTP request failed ({kind}): {message}")
        self.kind = kind
        self.detail = message

    @property
    def transient(self):
        return self.kind in ("connection", "timeout")


_ERROR_KINDS = {
    _host.HttpError_Denied: "denied",
    _host.HttpError_InvalidRequest: "invalid-request",
    _host.HttpError_Connection: "connection",
    _host.HttpError_Timeout: "timeout",
}


class HttpResponse:
    """A response: `status`, `headers` (list of (name, value)), `body` (bytes)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def ok(self):
        return 200 <= self.status < 300

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return _json.loads(self.body)

    def header(self, name, default=None):
        """The first header named `name` (any case), or `default`."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def __repr__(self):
        return f"HttpResponse({self.status}, {len(self.body)} bytes)"


def http_send(method, url, *, headers=None, body=None, json=None, timeout_ms=None):
    """Sends one request through the host (its `host:port` must be granted). Redirects are
    not followed. `headers`: a dict or (name, value) pairs. `body`: bytes or str; or `json`:
    a value sent as JSON (decimals as strings, datetimes as RFC 3339) with
    `Content-Type: application/json`. Returns an `HttpResponse` whatever its status; raises
    `HttpFailure` when nothing came back."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or ())
    if json is not None:
        body = json_dumps(json).encode("utf-8")
        if not any(k.lower() == "content-type" for k, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
    if body is None:
        body = b""
    elif isinstance(body, str):
        body = body.encode("utf-8")
    request = _host.HttpRequest(
        method=method,
        url=url,
        headers=[_host.HttpHeader(name=str(k), value=str(v)) for k, v in pairs],
        body=bytes(body),
        timeout_ms=timeout_ms,
    )
    try:
        response = _host.http_send(request)
    except Err as e:
        err = e.value
        raise HttpFailure(_ERROR_KINDS.get(type(err), "connection"), getattr(err, "value", str(err))) from None
    return HttpResponse(response.status, [(h.name, h.value) for h in response.headers], bytes(response.body))
