"""Destinations: base class of the `Writer` resource and row outcomes.

componentize-py looks for the resource class in a top-level module named after the
interface: write `class Writer(DestinationWriter)` in your project's `destination.py`.

    from backflow_sdk.destination import DestinationWriter, Outcome

    class Writer(DestinationWriter):
        def __init__(self, config, context):     # config: JSON text; context: SyncContext
            self.config = CONFIG.load(config)    # ConfigInvalid -> bad-config naming the field

        def write(self, op, batch):              # op: "insert" | "update" | "delete" | "append"
            for row in batch:                    # batch: backflow_sdk.Batch (lazily decoded)
                ...
            return [Outcome.accepted()] * len(batch)   # one outcome per row (None: all accepted)

        def finish(self):
            pass

`open`, `write` and `finish` are guarded: an exception becomes a plugin error value.
"""

from wit_world.exports import destination as _wit

from .plugin import OPERATION_NAMES, Error, batch_from_wit, wrap_methods

__all__ = ["DestinationWriter", "Outcome", "SyncContext"]

SyncContext = _wit.SyncContext

_ACCEPTED = _wit.RowOutcome_Accepted()


class Outcome:
    """Constructors of the contract's `row-outcome` (generated `RowOutcome_*` values)."""

    @staticmethod
    def accepted():
        return _ACCEPTED

    @staticmethod
    def rejected(message):
        return _wit.RowOutcome_Rejected(str(message))

    @staticmethod
    def retryable(message):
        return _wit.RowOutcome_Retryable(str(message))


_OUTCOME_TYPES = (_wit.RowOutcome_Accepted, _wit.RowOutcome_Rejected, _wit.RowOutcome_Retryable)


class DestinationWriter:
    """Base of a destination's `Writer`. Implement `__init__(self, config, context)`,
    `write(self, op, batch)` and, if needed, `finish(self)`."""

    def __init__(self, config, context):
        self.config_text = config
        self.context = context

    @classmethod
    def open(cls, config, context):
        return cls(config, context)

    def write(self, op, batch):
        return None

    def finish(self):
        return None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        user_write = cls.__dict__.get("write")
        if user_write is not None and not getattr(user_write, "__backflow_adapted__", False):

            def write(self, op, batch, _user=user_write):
                b = batch_from_wit(batch)
                outcomes = _user(self, OPERATION_NAMES[op], b)
                n = b.row_count
                # Contract 0.2.0: an empty list for a non-empty batch means every row was
                # accepted (lowering one outcome per row costs more than decoding the row).
                if outcomes is None:
                    return []
                outcomes = list(outcomes)
                if len(outcomes) != n:
                    raise Error.fatal(f"write returned {len(outcomes)} outcomes for a batch of {n} rows")
                for o in outcomes:
                    if not isinstance(o, _OUTCOME_TYPES):
                        raise Error.fatal(f"write returned {o!r}, not an Outcome")
                if all(type(o) is _wit.RowOutcome_Accepted for o in outcomes):
                    return []
                return outcomes

            write.__backflow_adapted__ = True
            write.__doc__ = user_write.__doc__
            cls.write = write
        wrap_methods(cls, ("open", "write", "finish"))


wrap_methods(DestinationWriter, ("open",))
