"""The `plugin` export every plugin has, plugin errors, and the guard that turns any
exception into a plugin error value instead of a trap.

Needs the generated bindings (`wit_world`). In your app module:

    import backflow_sdk as bf
    from backflow_sdk.plugin import Plugin as PluginBase

    CONFIG = bf.Config(url=bf.Field("string", required=True))

    class Plugin(PluginBase):
        SPEC = bf.Spec(name="my-plugin", version="0.1.0", kind="destination", config=CONFIG,
                       operations=["insert"], max_batch_size=500)

        def validate(self, config):          # optional: checks beyond the field types
            return []                        # Problems, (field, message) pairs or strings

Errors (values of the contract's `plugin-error`, raisable anywhere in an export):

    raise Error.retryable("HTTP 503")
    raise Error.rate_limited("HTTP 429", retry_after_ms=2000)
    raise Error.bad_config("url", "must be an http:// URL")
    raise Error.bad_row(row_index, key, "no email")
    raise Error.fatal("the account is closed")

Any other exception escaping an export is turned into a value as well (never a trap):
`ConfigInvalid` -> bad-config naming the field, `DecodeError`/`EncodeError` -> bad-row,
`HttpFailure` -> retryable (connection, timeout) or fatal (denied, invalid request), anything
else -> fatal with the exception's type and message (the traceback goes to the host log).
"""

import functools
import json
import traceback

from componentize_py_types import Err
from wit_world.imports import types

from . import host
from .config import Config, ConfigInvalid, Problem, Spec
from .rows import Batch, Column, DecodeError, EncodeError

__all__ = [
    "Plugin",
    "Error",
    "types",
    "Err",
    "WORLD_KIND",
    "guard",
    "to_plugin_error",
    "batch_from_wit",
    "columns_to_wit",
    "columns_from_wit",
]


def _world_kind():
    # Which world the component is being built for: the exports modules of the others are
    # not generated. Imported here, at build time, so that nothing is imported lazily.
    kinds = []
    try:
        from wit_world.exports import destination  # noqa: F401

        kinds.append("destination")
    except ImportError:
        pass
    try:
        from wit_world.exports import source  # noqa: F401

        kinds.append("source")
    except ImportError:
        pass
    try:
        from wit_world.exports import quality_check  # noqa: F401

        kinds.append("quality-check")
    except ImportError:
        pass
    try:
        from wit_world.exports import approval_policy  # noqa: F401

        kinds.append("approval-policy")
    except ImportError:
        pass
    return kinds[0] if len(kinds) == 1 else None


#: "source", "destination", "quality-check" or "approval-policy": the world being built.
WORLD_KIND = _world_kind()

_KIND = {
    "source": types.PluginKind.SOURCE,
    "destination": types.PluginKind.DESTINATION,
    "quality-check": types.PluginKind.QUALITY_CHECK,
    "approval-policy": types.PluginKind.APPROVAL_POLICY,
}
_OPERATION = {
    "insert": types.Operation.INSERT,
    "update": types.Operation.UPDATE,
    "delete": types.Operation.DELETE,
    "append": types.Operation.APPEND,
}
OPERATION_NAMES = {v: k for k, v in _OPERATION.items()}
_VALUE_TYPE = {vt.name.lower(): vt for vt in types.ValueType}
_VALUE_TYPE_NAME = {vt: name for name, vt in _VALUE_TYPE.items()}


class Error:
    """Constructors of the contract's `plugin-error`. Each returns an exception carrying the
    generated `PluginError_*` value: `raise Error.retryable("...")` returns that error from
    any result-returning export."""

    @staticmethod
    def retryable(message):
        return Err(types.PluginError_Retryable(str(message)))

    @staticmethod
    def rate_limited(message, retry_after_ms=None):
        ms = None if retry_after_ms is None else max(0, int(retry_after_ms))
        return Err(types.PluginError_RateLimited(types.RateLimit(message=str(message), retry_after_ms=ms)))

    @staticmethod
    def bad_config(field, message):
        return Err(types.PluginError_BadConfig(types.ConfigError(field=str(field), message=str(message))))

    @staticmethod
    def bad_row(row_index, key, message):
        return Err(
            types.PluginError_BadRow(
                types.RowError(row_index=int(row_index), key=None if key is None else str(key), message=str(message))
            )
        )

    @staticmethod
    def fatal(message):
        return Err(types.PluginError_Fatal(str(message)))


def to_plugin_error(e):
    """The `Err(PluginError_*)` for any exception."""
    if isinstance(e, Err):
        v = e.value
        if isinstance(
            v,
            (
                types.PluginError_Retryable,
                types.PluginError_RateLimited,
                types.PluginError_BadConfig,
                types.PluginError_BadRow,
                types.PluginError_Fatal,
            ),
        ):
            return e
        return Error.fatal(f"unhandled error value: {v!r}")
    if isinstance(e, ConfigInvalid):
        first = e.problems[0] if e.problems else Problem("", str(e))
        more = len(e.problems) - 1
        message = first.message + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")
        return Error.bad_config(first.field, message)
    if isinstance(e, (DecodeError, EncodeError)):
        return Error.bad_row(e.row_index if e.row_index is not None else 0, None, str(e))
    if isinstance(e, host.HttpFailure):
        return Error.retryable(str(e)) if e.transient else Error.fatal(str(e))
    _log_traceback(e)
    text = str(e)
    return Error.fatal(f"{type(e).__name__}: {text}" if text else type(e).__name__)


def _log_traceback(e):
    try:
        host.error("".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip())
    except BaseException:  # noqa: BLE001 - logging must never turn into a trap
        pass


def guard(fn):
    """Wraps a result-returning export: whatever it raises becomes a plugin error value."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - a trap would kill the instance
            raise to_plugin_error(e) from None

    wrapper.__backflow_guarded__ = True
    return wrapper


def wrap_methods(cls, names):
    """Guards the methods `names` that `cls` itself defines (used by the base classes)."""
    for name in names:
        fn = cls.__dict__.get(name)
        if fn is None or getattr(fn, "__backflow_guarded__", False):
            continue
        if isinstance(fn, classmethod):
            setattr(cls, name, classmethod(guard(fn.__func__)))
        elif isinstance(fn, staticmethod):
            setattr(cls, name, staticmethod(guard(fn.__func__)))
        else:
            setattr(cls, name, guard(fn))


def columns_from_wit(columns):
    """Generated `Column` records as `backflow_sdk.Column`s."""
    return [Column(c.name, _VALUE_TYPE_NAME[c.value_type], c.nullable) for c in columns]


def columns_to_wit(columns):
    """`Column`s (or (name, type[, nullable]) tuples, or {"name", "type"} dicts) as generated records."""
    out = []
    for c in columns:
        c = Column.of(c)
        out.append(types.Column(name=c.name, value_type=_VALUE_TYPE[c.value_type], nullable=bool(c.nullable)))
    return out


def batch_from_wit(batch):
    """A generated `RowBatch` (JSON row encoding) as a lazily decoded `Batch`."""
    return Batch(columns_from_wit(batch.columns), batch.row_count, batch.payload)


def encoded_to_wit(encoded):
    return types.RowBatch(columns=columns_to_wit(encoded.columns), row_count=encoded.row_count, payload=encoded.payload)


def _problem(p):
    if isinstance(p, Problem):
        return types.ConfigError(field=p.field, message=p.message)
    if isinstance(p, types.ConfigError):
        return p
    if isinstance(p, (tuple, list)) and len(p) == 2:
        return types.ConfigError(field=str(p[0]), message=str(p[1]))
    return types.ConfigError(field="", message=str(p))


def spec_to_wit(spec):
    rate = None
    if spec.default_rate_limit:
        r = spec.default_rate_limit
        rps = r.get("requests_per_second")
        rows = r.get("rows_per_second")
        rate = types.RateLimitSpec(
            requests_per_second=None if rps is None else float(rps),
            rows_per_second=None if rows is None else float(rows),
        )
    return types.PluginSpec(
        name=spec.name,
        version=spec.version,
        kind=_KIND[spec.kind],
        description=spec.description,
        config_schema=spec.config_schema_text(),
        operations=[_OPERATION[o] for o in spec.operations],
        max_batch_size=int(spec.max_batch_size),
        default_rate_limit=rate,
        row_encoding=types.RowEncoding.JSON,
    )


class Plugin:
    """Base of the app module's `Plugin` class (the `plugin` export).

    Set `SPEC` (a `backflow_sdk.Spec`); its `config`, when a `Config`, is also what
    `check_config` checks. Override `validate(self, config)` for checks beyond field types:
    it gets the parsed config (defaults filled in) and returns problems (`Problem`s,
    (field, message) pairs or strings). Neither `spec` nor `check_config` ever traps.
    """

    SPEC = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("SPEC")
        if spec is not None:
            if not isinstance(spec, Spec):
                raise TypeError(f"{cls.__name__}.SPEC must be a backflow_sdk.Spec")
            if WORLD_KIND is not None and spec.kind != WORLD_KIND:
                raise TypeError(f"{cls.__name__}.SPEC says kind {spec.kind!r}, but the component is built for the {WORLD_KIND} world")

    def spec(self):
        spec = self.SPEC
        try:
            return spec_to_wit(spec)
        except BaseException as e:  # noqa: BLE001 - spec cannot return an error: say it in the spec
            _log_traceback(e)
            kind = getattr(spec, "kind", None) or WORLD_KIND or "destination"
            return types.PluginSpec(
                name=str(getattr(spec, "name", "unnamed")),
                version=str(getattr(spec, "version", "0.0.0")),
                kind=_KIND.get(kind, types.PluginKind.DESTINATION),
                description=f"(the plugin's spec is broken: {type(e).__name__}: {e})",
                config_schema="{}",
                operations=[],
                max_batch_size=0,
                default_rate_limit=None,
                row_encoding=types.RowEncoding.JSON,
            )

    def validate(self, config):
        """Extra checks of a parsed config: return a list of problems (default: none)."""
        return []

    def check_config(self, config):
        try:
            schema = getattr(self.SPEC, "config", None)
            if isinstance(schema, Config):
                parsed, problems = schema.parse(config)
            else:
                try:
                    parsed = json.loads(config) if config and config.strip() else {}
                    problems = [] if isinstance(parsed, dict) else [Problem("", "the config must be an object (a table)")]
                except ValueError as e:
                    parsed, problems = None, [Problem("", f"the config is not JSON: {e}")]
            if parsed is not None and not problems:
                problems = list(self.validate(parsed) or [])
            return [_problem(p) for p in problems]
        except BaseException as e:  # noqa: BLE001 - check-config cannot return an error
            _log_traceback(e)
            return [types.ConfigError(field="", message=f"checking the config failed: {type(e).__name__}: {e}")]
