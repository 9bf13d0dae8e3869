"""Plugin configs: one small description gives the checks (with field-named problems) and
the JSON Schema the spec publishes. Pure Python, standard library only.

    CONFIG = Config(
        url=Field("string", required=True, description="Where to send rows",
                  check=lambda v: None if v.startswith(("http://", "https://")) else "must be an http:// or https:// URL"),
        headers=Field("object", values="string", description="Extra request headers"),
        max_null_percent=Field("number", default=0, minimum=0, maximum=100),
        columns=Field("array", items=Config(name=Field("string", required=True),
                                            type=Field("string", enum=VALUE_TYPES))),
    )
    problems = CONFIG.check(text)   # [Problem(field="headers.X", message="must be a string, not a number")]
    config = CONFIG.load(text)      # dict with defaults filled in; raises ConfigInvalid

Field types: "string", "number" (int or float), "integer", "boolean", "object" (`values=` a
type or Field for every value, or `fields=` a Config for known keys), "array" (`items=` a
type, Field or Config), "any". Problems name dotted paths: `headers.Authorization`,
`columns[0].type` (array items by position).
"""

import json
import os

__all__ = ["Config", "Field", "Problem", "ConfigInvalid", "Spec", "MISSING", "expand_secrets"]


class _Missing:
    def __repr__(self):
        return "MISSING"


MISSING = _Missing()

_TYPES = ("string", "number", "integer", "boolean", "object", "array", "any")


class Problem:
    """One problem with a config: the dotted field ("" for the whole config) and a message."""

    __slots__ = ("field", "message")

    def __init__(self, field, message):
        self.field = field
        self.message = message

    def __eq__(self, other):
        return isinstance(other, Problem) and (self.field, self.message) == (other.field, other.message)

    def __hash__(self):
        return hash((self.field, self.message))

    def __repr__(self):
        return f"Problem({self.field!r}, {self.message!r})"

    def __str__(self):
        return f"{self.field}: {self.message}" if self.field else self.message


class ConfigInvalid(ValueError):
    """Raised by `Config.load`: the config has problems (`.problems`, the first names the field)."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def _type_name(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


_ARTICLE = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "object": "an object (a table)",
    "array": "an array",
}


def _join(path, key):
    return f"{path}.{key}" if path else str(key)


def _item(path, i):
    return f"{path}[{i}]"


class Field:
    """One config field. See the module doc for the types."""

    def __init__(
        self,
        type="any",
        *,
        required=False,
        default=MISSING,
        description="",
        values=None,
        fields=None,
        items=None,
        enum=None,
        minimum=None,
        maximum=None,
        check=None,
    ):
        if type not in _TYPES:
            raise ValueError(f"unknown field type {type!r} (one of {', '.join(_TYPES)})")
        self.type = type
        self.required = required
        self.default = default
        self.description = description
        self.values = _as_field(values)
        self.fields = fields
        self.items = items if isinstance(items, Config) else _as_field(items)
        self.enum = list(enum) if enum is not None else None
        self.minimum = minimum
        self.maximum = maximum
        self.check_fn = check

    def validate(self, value, path, problems):
        """Appends the problems of `value` (at dotted `path`) and returns the value to keep."""
        t = self.type
        ok = True
        if t == "string":
            ok = isinstance(value, str)
        elif t == "number":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif t == "integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif t == "boolean":
            ok = isinstance(value, bool)
        elif t == "object":
            ok = isinstance(value, dict)
        elif t == "array":
            ok = isinstance(value, list)
        if not ok:
            problems.append(Problem(path, f"must be {_ARTICLE[t]}, not {_type_name(value)}"))
            return value
        if self.enum is not None and value not in self.enum:
            problems.append(Problem(path, f"must be one of {', '.join(json.dumps(e) for e in self.enum)}, not {json.dumps(value)}"))
            return value
        if t in ("number", "integer"):
            if self.minimum is not None and value < self.minimum:
                problems.append(Problem(path, f"must be at least {self.minimum}, not {value}"))
            if self.maximum is not None and value > self.maximum:
                problems.append(Problem(path, f"must be at most {self.maximum}, not {value}"))
        if t == "object":
            if self.fields is not None:
                value = self.fields._validate(value, path, problems)
            elif self.values is not None:
                value = {k: self.values.validate(v, _join(path, k), problems) for k, v in value.items()}
        if t == "array" and self.items is not None:
            items = self.items
            if isinstance(items, Config):
                kept = []
                for i, v in enumerate(value):
                    if isinstance(v, dict):
                        kept.append(items._validate(v, _item(path, i), problems))
                    else:
                        problems.append(Problem(_item(path, i), f"must be an object (a table), not {_type_name(v)}"))
                        kept.append(v)
                value = kept
            else:
                value = [items.validate(v, _item(path, i), problems) for i, v in enumerate(value)]
        if self.check_fn is not None:
            before = len(problems)
            try:
                message = self.check_fn(value)
            except (ValueError, TypeError) as e:
                message = str(e)
            if message and len(problems) == before:
                problems.append(Problem(path, message))
        return value

    def json_schema(self):
        s = {}
        if self.type != "any":
            s["type"] = self.type
        if self.description:
            s["description"] = self.description
        if self.enum is not None:
            s["enum"] = list(self.enum)
        if self.default is not MISSING:
            s["default"] = self.default
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        if self.type == "object":
            if self.fields is not None:
                s.update(self.fields._object_schema())
            elif self.values is not None:
                s["additionalProperties"] = self.values.json_schema()
        if self.type == "array" and self.items is not None:
            items = self.items
            s["items"] = items._object_schema() if isinstance(items, Config) else items.json_schema()
        return s


def _as_field(f):
    if f is None or isinstance(f, Field):
        return f
    if isinstance(f, str):
        return Field(f)
    raise TypeError(f"expected a Field or a type name, got {f!r}")


class Config:
    """A plugin's config: named fields. `allow_unknown=False` reports keys it does not know."""

    def __init__(self, fields=None, *, allow_unknown=False, **named):
        self.fields = dict(fields or {})
        self.fields.update(named)
        for name, f in self.fields.items():
            if not isinstance(f, Field):
                self.fields[name] = _as_field(f)
        self.allow_unknown = allow_unknown

    def check(self, text):
        """Every problem with the config JSON text (`[]` when it is fine)."""
        _, problems = self.parse(text)
        return problems

    def parse(self, text):
        """(config dict with defaults, problems). The dict is None when the text is not a JSON object."""
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8", "replace")
        if isinstance(text, dict):
            value = text
        else:
            if text is None or not str(text).strip():
                value = {}
            else:
                try:
                    value = json.loads(text)
                except ValueError as e:
                    return None, [Problem("", f"the config is not JSON: {e}")]
        if not isinstance(value, dict):
            return None, [Problem("", f"the config must be an object (a table), not {_type_name(value)}")]
        problems = []
        value = self._validate(value, "", problems)
        return value, problems

    def load(self, text):
        """The config as a dict with defaults filled in; raises `ConfigInvalid` on any problem."""
        value, problems = self.parse(text)
        if problems:
            raise ConfigInvalid(problems)
        return value

    def _validate(self, value, path, problems):
        out = {}
        for name, f in self.fields.items():
            p = _join(path, name)
            if name in value and value[name] is not None:
                out[name] = f.validate(value[name], p, problems)
            elif f.required:
                problems.append(Problem(p, "is required"))
            elif f.default is not MISSING:
                d = f.default
                out[name] = json.loads(json.dumps(d)) if isinstance(d, (dict, list)) else d
            else:
                out[name] = None
        for name in value:
            if name not in self.fields:
                if self.allow_unknown:
                    out[name] = value[name]
                else:
                    known = ", ".join(self.fields) or "none"
                    problems.append(Problem(_join(path, name), f"unknown field (known fields: {known})"))
        return out

    def _object_schema(self):
        s = {"type": "object", "properties": {n: f.json_schema() for n, f in self.fields.items()}}
        required = [n for n, f in self.fields.items() if f.required]
        if required:
            s["required"] = required
        if not self.allow_unknown:
            s["additionalProperties"] = False
        return s

    def json_schema(self):
        """The config's JSON Schema (draft 2020-12) as a dict."""
        s = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
        s.update(self._object_schema())
        return s


class Spec:
    """What a plugin says about itself (the contract's `plugin-spec`), in plain Python.

    `kind`: "source", "destination", "quality-check" or "approval-policy".
    `config`: a `Config` (its JSON Schema is published), a JSON Schema dict, or JSON text.
    `operations`: destinations only, any of "insert", "update", "delete", "append".
    `default_rate_limit`: destinations only, e.g. {"requests_per_second": 10}.
    The row encoding is always JSON (the SDK decodes and encodes it).
    """

    KINDS = ("source", "destination", "quality-check", "approval-policy")
    OPERATIONS = ("insert", "update", "delete", "append")

    def __init__(
        self,
        name,
        version,
        kind,
        description="",
        config=None,
        operations=(),
        max_batch_size=0,
        default_rate_limit=None,
    ):
        if kind not in self.KINDS:
            raise ValueError(f"unknown plugin kind {kind!r} (one of {', '.join(self.KINDS)})")
        for op in operations:
            if op not in self.OPERATIONS:
                raise ValueError(f"unknown operation {op!r} (one of {', '.join(self.OPERATIONS)})")
        self.name = name
        self.version = version
        self.kind = kind
        self.description = description
        self.config = config
        self.operations = list(operations)
        self.max_batch_size = max_batch_size
        self.default_rate_limit = dict(default_rate_limit) if default_rate_limit else None

    def config_schema_text(self):
        c = self.config
        if c is None:
            return json.dumps({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"})
        if isinstance(c, Config):
            return json.dumps(c.json_schema())
        if isinstance(c, dict):
            return json.dumps(c)
        return str(c)


def expand_secrets(value, kind="plugin", environ=None):
    """`value` with every `${env.NAME}` replaced by the environment variable NAME (a secret
    the operator granted with `grants.env`). Raises ValueError naming a variable that is not
    set or not granted; `kind` ("source", "destination") words the hint."""
    env = os.environ if environ is None else environ
    out = []
    rest = value
    while True:
        start = rest.find("${env.")
        if start == -1:
            break
        out.append(rest[:start])
        after = rest[start + 6 :]
        end = after.find("}")
        if end == -1:
            raise ValueError(f"unterminated ${{env.…}} in {value!r}")
        name = after[:end]
        if name not in env:
            raise ValueError(f"environment variable {name} is not set or not granted to this {kind} (add it to grants.env)")
        out.append(env[name])
        rest = after[end + 1 :]
    out.append(rest)
    return "".join(out)
