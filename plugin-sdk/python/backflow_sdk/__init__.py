"""backflow_sdk: a thin SDK for backflow plugins written in Python (contract 0.2.0, JSON
row encoding), built into WebAssembly components with componentize-py.

Pure Python, standard library only (componentize-py drops native extensions silently).

What needs no bindings (importable anywhere, unit-testable natively):

    backflow_sdk.rows     Batch, Row, Column, BatchBuilder, encode/decode of row batches
    backflow_sdk.config   Config, Field, Problem, ConfigInvalid, Spec, expand_secrets
    backflow_sdk.stdlib   preloads the standard-library modules imported lazily (heapq...)
    backflow_sdk.build_check  `python3 -m backflow_sdk.build_check`: imports inside functions

What needs the bindings componentize-py generates (import these at the top of your modules):

    backflow_sdk.plugin           Plugin base (spec, check-config), Error constructors, guard
    backflow_sdk.host             log, now_ms, http_send
    backflow_sdk.destination      DestinationWriter, Outcome
    backflow_sdk.source           SourceReader
    backflow_sdk.quality_check    QualityChecker, check_result
    backflow_sdk.approval_policy  ApprovalPolicyBase, approve, require, reject
"""

# First: the standard-library modules the component would otherwise lack (see stdlib.py).
from . import stdlib as _stdlib  # noqa: F401
from .config import MISSING, Config, ConfigInvalid, Field, Problem, Spec, expand_secrets
from .rows import (
    MAX_SAFE_INTEGER,
    VALUE_TYPES,
    Batch,
    BatchBuilder,
    Column,
    DecodeError,
    EncodedBatch,
    EncodeError,
    Row,
    decode_value,
    encode_rows,
    encode_value,
    format_timestamp,
    json_dumps,
    parse_timestamp,
    to_json_value,
)

__version__ = "0.2.0"

__all__ = [
    "MISSING",
    "Config",
    "ConfigInvalid",
    "Field",
    "Problem",
    "Spec",
    "expand_secrets",
    "MAX_SAFE_INTEGER",
    "VALUE_TYPES",
    "Batch",
    "BatchBuilder",
    "Column",
    "DecodeError",
    "EncodedBatch",
    "EncodeError",
    "Row",
    "decode_value",
    "encode_rows",
    "encode_value",
    "format_timestamp",
    "json_dumps",
    "parse_timestamp",
    "to_json_value",
]
