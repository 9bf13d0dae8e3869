"""Row batches in the JSON row encoding of contract 0.2.0 (wit/README.md, "JSON row encoding").

Pure Python, standard library only: importable without the generated bindings, so it can be
unit-tested natively.

Decoding is lazy: a `Batch` parses its payload with one `json.loads` the first time rows are
asked for, and converts a value to its Python type only when it is read:

    for row in batch:              # light views, nothing converted yet
        email = row["email"]       # converted now (text: as is)
    batch.column("mrr")            # [Decimal("12.50"), ...]
    row.to_dict()                  # every field converted

Python types by column type:

    integer -> int          float -> float (nan, inf)    decimal -> decimal.Decimal (exact)
    text -> str             bytes -> bytes               timestamp -> datetime (UTC, aware)
    date -> datetime.date   json -> the parsed document   boolean -> bool
    any -> per value: the tagged one-key objects ({"decimal": "1.5"}) become the types above
    null -> None (in every column)

Building (sources): `BatchBuilder(columns).add(row)...build()` or `encode_rows(columns, rows)`
turn Python values back into the JSON row encoding.
"""

import base64
import binascii
import json
import math
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

__all__ = [
    "VALUE_TYPES",
    "MAX_SAFE_INTEGER",
    "Column",
    "Batch",
    "Row",
    "DecodeError",
    "EncodeError",
    "BatchBuilder",
    "EncodedBatch",
    "encode_rows",
    "encode_value",
    "decode_value",
    "to_json_value",
    "json_dumps",
    "format_timestamp",
    "parse_timestamp",
]

#: The value-type names of the contract, as used in `Column.value_type`.
VALUE_TYPES = ("any", "boolean", "integer", "float", "decimal", "text", "bytes", "timestamp", "date", "json")

#: The largest integer a JSON number carries exactly everywhere (2^53 - 1).
MAX_SAFE_INTEGER = 9007199254740991

UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Column:
    """A column of a batch: its name, value type (one of `VALUE_TYPES`) and nullability."""

    __slots__ = ("name", "value_type", "nullable")

    def __init__(self, name, value_type, nullable=True):
        if value_type not in _TYPE_SET:
            raise ValueError(f"column {name!r}: unknown value type {value_type!r} (one of {', '.join(VALUE_TYPES)})")
        self.name = name
        self.value_type = value_type
        self.nullable = nullable

    def __repr__(self):
        return f"Column({self.name!r}, {self.value_type!r}, nullable={self.nullable!r})"

    def __eq__(self, other):
        return isinstance(other, Column) and (self.name, self.value_type, self.nullable) == (
            other.name,
            other.value_type,
            other.nullable,
        )

    def __hash__(self):
        return hash((self.name, self.value_type, self.nullable))

    @classmethod
    def of(cls, spec):
        """A Column from a Column, a (name, type[, nullable]) tuple or a {"name", "type"} dict."""
        if isinstance(spec, Column):
            return spec
        if isinstance(spec, dict):
            return cls(spec["name"], spec.get("type", spec.get("value_type", "any")), spec.get("nullable", True))
        return cls(*spec)


_TYPE_SET = frozenset(VALUE_TYPES)


class DecodeError(ValueError):
    """A value in a batch that does not fit its column. Names the row and column."""

    def __init__(self, row_index, column, message):
        super().__init__(f"row {row_index}, column {column!r}: {message}")
        self.row_index = row_index
        self.column = column
        self.detail = message


class EncodeError(ValueError):
    """A Python value that cannot be written to its column. Names the row and column."""

    def __init__(self, row_index, column, message):
        where = f"row {row_index}, column {column!r}" if row_index is not None else f"column {column!r}"
        super().__init__(f"{where}: {message}")
        self.row_index = row_index
        self.column = column
        self.detail = message


# ----------------------------------------------------------------------------------------
# Decoding: wire value -> Python value. Each converter gets a non-null wire value.


def _describe(v):
    text = json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 40 else text[:40] + "…"


def _dec_integer(v):
    t = type(v)
    if t is int:
        return v
    if t is str:
        try:
            return int(v, 10)
        except ValueError:
            pass
    elif t is float and v.is_integer():
        return int(v)
    raise ValueError(f"expected an integer (a number or a string of digits), got {_describe(v)}")


_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _dec_float(v):
    t = type(v)
    if t is float:
        return v
    if t is int:
        return float(v)
    if t is str:
        f = _FLOAT_WORDS.get(v)
        if f is not None:
            return f
    raise ValueError(f'expected a float (a number, or "NaN", "Infinity", "-Infinity"), got {_describe(v)}')


def _dec_decimal(v):
    if type(v) is str:
        try:
            d = Decimal(v)
        except InvalidOperation:
            pass
        else:
            if d.is_finite():
                return d
    raise ValueError(f'expected a decimal as a string ("-12.50"), got {_describe(v)}')


def _dec_text(v):
    if type(v) is str:
        return v
    raise ValueError(f"expected a string, got {_describe(v)}")


def _dec_boolean(v):
    if v is True or v is False:
        return v
    raise ValueError(f"expected true or false, got {_describe(v)}")


def _dec_bytes(v):
    if type(v) is str:
        try:
            return binascii.a2b_base64(v, strict_mode=True) if _STRICT_B64 else base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            pass
    raise ValueError(f"expected bytes as a base64 string, got {_describe(v)}")


try:
    binascii.a2b_base64("", strict_mode=True)
    _STRICT_B64 = True
except TypeError:  # Python < 3.11
    _STRICT_B64 = False

_fromisoformat = datetime.fromisoformat


def parse_timestamp(text):
    """An RFC 3339 timestamp (any offset, up to 9 fractional digits) as an aware UTC datetime."""
    try:
        d = _fromisoformat(text)
    except ValueError:
        d = _parse_timestamp_slow(text)
    tz = d.tzinfo
    if tz is UTC:
        return d
    if tz is None:
        return d.replace(tzinfo=UTC)
    return d.astimezone(UTC)


def _parse_timestamp_slow(text):
    # fromisoformat (before 3.11, or with more than 6 fractional digits on some versions)
    # refuses some RFC 3339 forms: normalise the fraction to 6 digits and `Z` to +00:00.
    t = text.strip()
    if t[-1:] in ("Z", "z"):
        t = t[:-1] + "+00:00"
    dot = t.find(".", 19)
    if dot != -1:
        end = dot + 1
        while end < len(t) and t[end].isdigit():
            end += 1
        frac = t[dot + 1 : end][:6].ljust(6, "0")
        t = t[:dot] + "." + frac + t[end:]
    if len(t) > 10 and t[10] in "t ":
        t = t[:10] + "T" + t[11:]
    return _fromisoformat(t)


def _dec_timestamp(v):
    if type(v) is str:
        try:
            return parse_timestamp(v)
        except (ValueError, IndexError, OverflowError):
            pass
    raise ValueError(f"expected an RFC 3339 timestamp in years 1-9999, got {_describe(v)}")


def _dec_date(v):
    if type(v) is str and len(v) == 10:
        try:
            return date.fromisoformat(v)
        except ValueError:
            pass
    raise ValueError(f"expected a date YYYY-MM-DD in years 1-9999, got {_describe(v)}")


def _dec_json(v):
    return v


_TAGGED = {
    "integer": _dec_integer,
    "float": _dec_float,
    "decimal": _dec_decimal,
    "bytes": _dec_bytes,
    "timestamp": _dec_timestamp,
    "date": _dec_date,
    "json": _dec_json,
}


def _dec_any(v):
    if type(v) is not dict:
        if type(v) is list:
            raise ValueError(f"an `any` column holds no bare arrays (documents are {{\"json\": …}}), got {_describe(v)}")
        return v
    if len(v) == 1:
        for tag, inner in v.items():
            conv = _TAGGED.get(tag)
            if conv is not None and (inner is not None or tag == "json"):
                return conv(inner)
    raise ValueError(
        "an `any` column's object must have one key naming a type "
        f"(integer, float, decimal, bytes, timestamp, date, json), got {_describe(v)}"
    )


# Converter per type; None means the wire value is already the Python value (no call).
# Strict checks of identity types (text, boolean) are skipped on the fast path: the engine
# only sends values that fit their column.
_DECODERS = {
    "any": _dec_any,
    "boolean": None,
    "integer": _dec_integer,
    "float": _dec_float,
    "decimal": _dec_decimal,
    "text": None,
    "bytes": _dec_bytes,
    "timestamp": _dec_timestamp,
    "date": _dec_date,
    "json": None,
}

# Types whose converter may be skipped when the wire value already has the Python type.
_FAST_TYPE = {"integer": int, "float": float}


def decode_value(value_type, wire):
    """One wire value of a column of `value_type` as its Python value (None for null)."""
    if wire is None:
        return None
    conv = _DECODERS[value_type]
    return wire if conv is None else conv(wire)


_tget = tuple.__getitem__


class Row(tuple):
    """A view of one row of a `Batch`. Reading a field converts it; nothing is copied.

    `row["email"]`, `row.get("email", default)`, `row[3]` (by position), `"email" in row`,
    `row.index` (its position in the batch), `row.to_dict()`, `row.raw` (the wire values),
    `row.keys()`, `row.values()`, `row.items()`; iterating a row yields its column names.

    (A row is a tuple `(raw, index)` of a class made per batch that holds the column
    lookup, so making one costs no Python call: that is what keeps reading fast inside the
    WebAssembly interpreter.)
    """

    __slots__ = ()
    _index = {}
    _names = ()
    _conv = ()
    _fast = ()

    def __getitem__(self, key):
        try:
            i = self._index[key]
        except KeyError:
            if type(key) is int:
                i = range(len(self._names))[key]
            else:
                raise KeyError(f"no column {key!r} (columns: {', '.join(self._names)})") from None
        v = _tget(self, 0)[i]
        if v is None:
            return None
        conv = self._conv[i]
        if conv is None:
            return v
        fast = self._fast[i]
        if fast is not None and type(v) is fast:
            return v
        try:
            return conv(v)
        except ValueError as e:
            raise DecodeError(_tget(self, 1), self._names[i], str(e)) from None

    @property
    def raw(self):
        """The row's wire values (a list, one per column)."""
        return _tget(self, 0)

    @property
    def index(self):
        """The row's position in its batch."""
        return _tget(self, 1)

    def get(self, key, default=None):
        if key in self._index:
            return self[key]
        return default

    def __contains__(self, key):
        return key in self._index

    def __len__(self):
        return len(self._names)

    def __iter__(self):
        return iter(self._names)

    def keys(self):
        return list(self._names)

    def values(self):
        """Every field, converted, in column order."""
        out = []
        append = out.append
        convs = self._conv
        fasts = self._fast
        for i, v in enumerate(_tget(self, 0)):
            conv = convs[i]
            if v is None or conv is None:
                append(v)
                continue
            fast = fasts[i]
            if fast is not None and type(v) is fast:
                append(v)
                continue
            try:
                append(conv(v))
            except ValueError as e:
                raise DecodeError(_tget(self, 1), self._names[i], str(e)) from None
        return out

    def items(self):
        return list(zip(self._names, self.values()))

    def to_dict(self):
        """Every field, converted, as a new dict in column order."""
        return dict(zip(self._names, self.values()))

    def __eq__(self, other):
        if isinstance(other, Row):
            return self.to_dict() == other.to_dict()
        if isinstance(other, dict):
            return self.to_dict() == other
        return NotImplemented

    __hash__ = None

    def __repr__(self):
        return f"Row({_tget(self, 1)}, {self.to_dict()!r})"

    def __reduce__(self):
        return (dict, (self.to_dict(),))


class Batch:
    """A batch of rows in the JSON row encoding, decoded lazily.

    `len(batch)`, `for row in batch` / `batch.rows()` (Row views), `batch.row(i)`,
    `batch.column(name)` (one column's converted values), `batch.dicts()` (every row as a
    dict), `batch.raw` (the parsed payload: a list of lists of wire values).
    """

    __slots__ = ("columns", "row_count", "payload", "_raw", "_names", "_index", "_conv", "_fast", "_rowcls")

    def __init__(self, columns, row_count, payload):
        self.columns = [Column.of(c) for c in columns]
        self.row_count = row_count
        self.payload = payload
        self._raw = None
        self._rowcls = None
        names = self._names = tuple(c.name for c in self.columns)
        self._index = {n: i for i, n in enumerate(names)}
        self._conv = tuple(_DECODERS[c.value_type] for c in self.columns)
        self._fast = tuple(_FAST_TYPE.get(c.value_type) for c in self.columns)

    @property
    def raw(self):
        raw = self._raw
        if raw is None:
            raw = self._raw = _parse_payload(self.payload, self.row_count, len(self.columns))
        return raw

    @property
    def names(self):
        """The column names, in order."""
        return list(self._names)

    def __len__(self):
        return self.row_count

    def _row_class(self):
        cls = self._rowcls
        if cls is None:
            cls = self._rowcls = type(
                "Row",
                (Row,),
                {
                    "__slots__": (),
                    "_index": self._index,
                    "_names": self._names,
                    "_conv": self._conv,
                    "_fast": self._fast,
                },
            )
        return cls

    def rows(self):
        """Every row as a light `Row` view, in order."""
        raw = self.raw
        return map(self._row_class(), zip(raw, range(len(raw))))

    __iter__ = rows

    def row(self, index):
        raw = self.raw
        if index < 0:
            index += len(raw)
        return self._row_class()((raw[index], index))

    def column(self, name):
        """The converted values of one column, in row order."""
        try:
            i = self._index[name]
        except KeyError:
            raise KeyError(f"no column {name!r} (columns: {', '.join(self._names)})") from None
        raw = self.raw
        conv = self._conv[i]
        if conv is None:
            return [r[i] for r in raw]
        fast = self._fast[i]
        out = []
        append = out.append
        for n, r in enumerate(raw):
            v = r[i]
            if v is None or (fast is not None and type(v) is fast):
                append(v)
                continue
            try:
                append(conv(v))
            except ValueError as e:
                raise DecodeError(n, name, str(e)) from None
        return out

    def dicts(self):
        """Every row as a dict of converted values."""
        return [r.to_dict() for r in self.rows()]

    def __repr__(self):
        return f"Batch({self.row_count} rows, columns={self.names!r})"


def _parse_payload(payload, row_count, width):
    try:
        raw = json.loads(payload)
    except ValueError as e:
        raise ValueError(f"batch payload is not JSON: {e}") from None
    if type(raw) is not list:
        raise ValueError("batch payload is not a JSON array of rows")
    if len(raw) != row_count:
        raise ValueError(f"batch payload holds {len(raw)} rows, the batch says {row_count}")
    return raw


# ----------------------------------------------------------------------------------------
# Encoding: Python value -> wire value.


def format_timestamp(d):
    """A datetime as the contract's RFC 3339 UTC text (0, 3 or 6 fractional digits, `Z`).

    A naive datetime is taken to be UTC already."""
    if d.tzinfo is not None:
        d = d.astimezone(UTC)
    us = d.microsecond
    base = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    if us == 0:
        return base + "Z"
    if us % 1000 == 0:
        return f"{base}.{us // 1000:03d}Z"
    return f"{base}.{us:06d}Z"


def _decimal_text(d):
    if not d.is_finite():
        raise ValueError(f"a decimal must be finite, got {d}")
    return format(d, "f")


def _b64(v):
    return base64.b64encode(bytes(v)).decode("ascii")


def _enc_integer(v):
    if type(v) is bool or not isinstance(v, int):
        if isinstance(v, str):
            v = _dec_integer(v)
        elif isinstance(v, float) and v.is_integer():
            v = int(v)
        elif isinstance(v, Decimal) and v == v.to_integral_value():
            v = int(v)
        else:
            raise ValueError(f"expected an int, got {type(v).__name__} {v!r}")
    if -(2**63) <= v < 2**63:
        return v if -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER else str(v)
    raise ValueError(f"integer {v} is outside the signed 64-bit range")


def _enc_float(v):
    if type(v) is bool or not isinstance(v, (int, float, Decimal)):
        raise ValueError(f"expected a float, got {type(v).__name__} {v!r}")
    f = float(v)
    if math.isfinite(f):
        return f
    return "NaN" if f != f else ("Infinity" if f > 0 else "-Infinity")


def _enc_decimal(v):
    if isinstance(v, Decimal):
        return _decimal_text(v)
    if isinstance(v, int) and type(v) is not bool:
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"a decimal must be finite, got {v}")
        return _decimal_text(Decimal(repr(v)))
    if isinstance(v, str):
        return _decimal_text(_dec_decimal(v))
    raise ValueError(f"expected a Decimal, got {type(v).__name__} {v!r}")


def _enc_text(v):
    if isinstance(v, str):
        return v
    raise ValueError(f"expected a str, got {type(v).__name__} {v!r}")


def _enc_boolean(v):
    if v is True or v is False:
        return v
    raise ValueError(f"expected a bool, got {type(v).__name__} {v!r}")


def _enc_bytes(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _b64(v)
    raise ValueError(f"expected bytes, got {type(v).__name__} {v!r}")


def _enc_timestamp(v):
    if isinstance(v, datetime):
        return format_timestamp(v)
    if isinstance(v, str):
        return format_timestamp(_dec_timestamp(v))
    if isinstance(v, (int, float)) and type(v) is not bool:
        # Seconds since the Unix epoch.
        return format_timestamp(_EPOCH + timedelta(seconds=v))
    raise ValueError(f"expected a datetime, got {type(v).__name__} {v!r}")


def _enc_date(v):
    if isinstance(v, datetime):
        v = (v.astimezone(UTC) if v.tzinfo is not None else v).date()
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, str):
        return _dec_date(v).isoformat()
    raise ValueError(f"expected a date, got {type(v).__name__} {v!r}")


def _enc_json(v):
    # Checked now so that the error names the row; the document travels inline.
    to_json_value(v)
    return v


def _enc_any(v):
    if v is True or v is False or isinstance(v, str):
        return v
    if isinstance(v, int):
        if -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
            return v
        return {"integer": _enc_integer(v)}
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": _enc_float(v)}
    if isinstance(v, Decimal):
        return {"decimal": _decimal_text(v)}
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"bytes": _b64(v)}
    if isinstance(v, datetime):
        return {"timestamp": format_timestamp(v)}
    if isinstance(v, date):
        return {"date": v.isoformat()}
    if isinstance(v, (dict, list, tuple)):
        return {"json": _enc_json(v)}
    raise ValueError(f"cannot write a {type(v).__name__} to an `any` column")


_ENCODERS = {
    "any": _enc_any,
    "boolean": _enc_boolean,
    "integer": _enc_integer,
    "float": _enc_float,
    "decimal": _enc_decimal,
    "text": _enc_text,
    "bytes": _enc_bytes,
    "timestamp": _enc_timestamp,
    "date": _enc_date,
    "json": _enc_json,
}


def encode_value(value_type, v):
    """A Python value as the wire value of a column of `value_type` (raises ValueError)."""
    if v is None:
        return None
    return _ENCODERS[value_type](v)


_SAME_TYPE = {"text": str, "boolean": bool, "integer": int, "any": str}


class EncodedBatch:
    """A batch ready to cross the boundary: columns, row count and the UTF-8 JSON payload."""

    __slots__ = ("columns", "row_count", "payload")

    def __init__(self, columns, row_count, payload):
        self.columns = columns
        self.row_count = row_count
        self.payload = payload

    def __repr__(self):
        return f"EncodedBatch({self.row_count} rows, {len(self.payload)} bytes)"


class BatchBuilder:
    """Builds a batch for a source's `next_batch` from Python values.

    Rows are dicts (by column name; a missing key is null) or sequences (one value per
    column, in order). Values are checked against their column as they are added; an error
    names the row and column.
    """

    def __init__(self, columns):
        self.columns = [Column.of(c) for c in columns]
        self._names = [c.name for c in self.columns]
        self._enc = [_ENCODERS[c.value_type] for c in self.columns]
        self._nullable = [c.nullable for c in self.columns]
        # Values already in their wire form, passed through without a call.
        self._same = [_SAME_TYPE.get(c.value_type) for c in self.columns]
        self._rows = []

    def __len__(self):
        return len(self._rows)

    def add(self, row):
        n = len(self._rows)
        if isinstance(row, dict):
            values = [row.get(name) for name in self._names]
        elif isinstance(row, Row):
            values = [row.get(name) for name in self._names]
        else:
            values = list(row)
            if len(values) != len(self._names):
                raise EncodeError(n, None, f"has {len(values)} values for {len(self._names)} columns")
        out = []
        same = self._same
        for i, v in enumerate(values):
            t = same[i]
            if t is not None and type(v) is t and (t is not int or -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER):
                out.append(v)
                continue
            if v is None:
                if not self._nullable[i]:
                    raise EncodeError(n, self._names[i], "is null, but the column is not nullable")
                out.append(None)
                continue
            try:
                out.append(self._enc[i](v))
            except (ValueError, TypeError, OverflowError) as e:
                raise EncodeError(n, self._names[i], str(e)) from None
        self._rows.append(out)
        return self

    def extend(self, rows):
        for r in rows:
            self.add(r)
        return self

    def build(self):
        """The `EncodedBatch`; the builder is left empty for the next one."""
        rows, self._rows = self._rows, []
        return EncodedBatch(list(self.columns), len(rows), json_dumps(rows).encode("utf-8"))


def encode_rows(columns, rows):
    """`BatchBuilder(columns).extend(rows).build()`."""
    return BatchBuilder(columns).extend(rows).build()


# ----------------------------------------------------------------------------------------
# Plain JSON for native values (request bodies, check samples).


def _json_default(v):
    if isinstance(v, Decimal):
        return _decimal_text(v) if v.is_finite() else str(v)
    if isinstance(v, datetime):
        return format_timestamp(v)
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _b64(v)
    if isinstance(v, Row):
        return v.to_dict()
    if isinstance(v, (set, frozenset, tuple)):
        return list(v)
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def to_json_value(v):
    """`v` made JSON-ready: decimals as strings, datetimes as RFC 3339 UTC strings, dates as
    YYYY-MM-DD, bytes as base64; non-finite floats as "NaN"/"Infinity"/"-Infinity"."""
    return json.loads(json_dumps(v))


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _unrow(v):
    # Rows are tuples underneath, which json writes as arrays before asking `default`:
    # turn them (at the top, or as items of a list or values of a dict) into dicts first.
    if isinstance(v, Row):
        return v.to_dict()
    if isinstance(v, (list, tuple)) and any(isinstance(x, Row) for x in v):
        return [x.to_dict() if isinstance(x, Row) else x for x in v]
    if isinstance(v, dict) and any(isinstance(x, Row) for x in v.values()):
        return {k: x.to_dict() if isinstance(x, Row) else x for k, x in v.items()}
    return v


def json_dumps(v):
    """Compact JSON text of `v`, with the conversions of `to_json_value`. Rows become
    objects (at the top, or as items of a list or values of a dict)."""
    v = _unrow(v)
    try:
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError:
        # A non-finite float somewhere: spell it as the contract does.
        return json.dumps(_finite(v), separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default)
