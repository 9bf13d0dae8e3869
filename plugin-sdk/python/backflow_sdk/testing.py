"""Unit tests of a plugin natively, in CPython, with a fake host (issue 41).

    from backflow_sdk import testing
    host = testing.load()                     # the project's .bindings (./build.sh makes them)
    host.respond(200, b'{"ok": true}')        # or host.fail("timeout", "..."), host.answer = f
    from destination import Writer
    outcomes = testing.write_rows(Writer, config, "insert", [{"email": "a@x.com"}])
    assert outcomes == ["accepted"]
    assert host.requests[0].json()

`load` imports the bindings componentize-py generated for the project's world (build.sh
writes them to `.bindings`) and replaces the host's functions (`log`, `now_ms`, `http_send`)
with a `FakeHost`: the plugin's own modules then run unchanged. The fake records every request
(`method`, `url`, `headers` with lowercase names, `body` bytes, `text`, `json()`) and log line,
and answers as scripted. Not for the component: nothing imports this module there.
"""

import importlib
import json
import os
import sys

# Modules re-imported by every `load` (the bindings and the plugin's own).
_FRESH = ("wit_world", "componentize_py_types", "componentize_py_async_support", "poll_loop", "backflow_sdk", "app", "destination", "source", "quality_check")


class Request:
    """One request the plugin sent."""

    def __init__(self, wit_request):
        self.method = wit_request.method
        self.url = wit_request.url
        self.headers = {h.name.lower(): h.value for h in wit_request.headers}
        self.body = bytes(wit_request.body)
        self.timeout_ms = wit_request.timeout_ms

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)


class FakeHost:
    """The host's functions, faked: records logs and requests, answers with `answer`."""

    def __init__(self, host):
        self.host = host
        self.logs = []
        self.requests = []
        self.respond(200, b"{}")

    def log(self, level, message):
        self.logs.append((level.name.lower(), message))

    def http_send(self, request):
        self.requests.append(Request(request))
        return self.answer(self.requests[-1])

    def respond(self, status, body=b"", headers=()):
        """Answers every request with `status`, `body` (bytes, text or a JSON value) and
        `headers` (pairs or a dict)."""
        self.answer = lambda request: self.response(status, body, headers)

    def response(self, status, body=b"", headers=()):
        """An HTTP response value, for an `answer` function of your own."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        pairs = headers.items() if isinstance(headers, dict) else headers
        h = self.host
        return h.HttpResponse(status=status, headers=[h.HttpHeader(name=k, value=str(v)) for k, v in pairs], body=body)

    def fail(self, kind, message):
        """Every request fails without an answer: kind "connection", "timeout", "denied" or
        "invalid-request"."""
        from componentize_py_types import Err

        cls = {
            "connection": self.host.HttpError_Connection,
            "timeout": self.host.HttpError_Timeout,
            "denied": self.host.HttpError_Denied,
            "invalid-request": self.host.HttpError_InvalidRequest,
        }[kind]

        def answer(request):
            raise Err(cls(message))

        self.answer = answer


def load(project=".", bindings=None, now_ms=1_700_000_000_000):
    """Imports the project's bindings with a fake host and returns it (see the module docs).
    `project`: the plugin's directory; `bindings`: its generated bindings (`.bindings`)."""
    project = os.path.abspath(project)
    bindings = os.path.abspath(bindings or os.path.join(project, ".bindings"))
    if not os.path.isdir(os.path.join(bindings, "wit_world")):
        raise RuntimeError(f"no generated bindings in {bindings}: run ./build.sh once (it writes .bindings)")
    for name in list(sys.modules):
        if name.split(".")[0] in _FRESH:
            del sys.modules[name]
    sys.path[:0] = [bindings, project]
    host = importlib.import_module("wit_world.imports.host")
    fake = FakeHost(host)
    host.log = fake.log
    host.now_ms = lambda: now_ms
    host.http_send = fake.http_send
    return fake


def _value_type(values):
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "boolean"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "integer"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float"
    if all(isinstance(v, str) for v in present):
        return "text"
    return "json"


def row_batch(rows, columns=None):
    """A row batch as the host passes it (JSON row encoding) from rows as dicts; the columns
    are the rows' keys in order, typed from their values, unless `columns` ([(name, type)])."""
    from wit_world.imports import types

    if columns is None:
        names = []
        for row in rows:
            names.extend(k for k in row if k not in names)
        columns = [(n, _value_type([r.get(n) for r in rows])) for n in names]
    vt = {v.name.lower(): v for v in types.ValueType}
    values = [[row.get(n) for n, _ in columns] for row in rows]
    return types.RowBatch(
        columns=[types.Column(name=n, value_type=vt[t], nullable=True) for n, t in columns],
        row_count=len(rows),
        payload=json.dumps(values).encode(),
    )


def write_rows(writer_class, config, op, rows, key=None):
    """Opens `writer_class` (your destination's Writer) with `config` (a dict or JSON text),
    writes `rows` with `op` ("insert", ...), finishes, and returns one outcome per row:
    "accepted", or ("rejected" | "retryable", message). A plugin error raises
    componentize_py_types.Err (its `.value` the error)."""
    from wit_world.exports import destination as wd
    from wit_world.imports import types

    text = config if isinstance(config, str) else json.dumps(config)
    first = key or (next(iter(rows[0])) if rows else "id")
    writer = writer_class.open(text, wd.SyncContext(sync_name="test", primary_key=[first], run_id="test-run"))
    outcomes = writer.write(types.Operation[op.upper()], row_batch(rows))
    writer.finish()
    if not outcomes:
        return ["accepted"] * len(rows)
    named = []
    for o in outcomes:
        kind = type(o).__name__.split("_")[-1].lower()
        named.append("accepted" if kind == "accepted" else (kind, getattr(o, "value", None)))
    return named
