"""Sources: base class of the `Reader` resource.

componentize-py looks for the resource class in a top-level module named after the
interface: write `class Reader(SourceReader)` in your project's `source.py`.

    from backflow_sdk.source import SourceReader

    class Reader(SourceReader):
        def __init__(self, config, query):       # config: JSON text; query: the model's query
            ...
        def columns(self):                       # Columns, (name, type) pairs or dicts
            return [("id", "integer"), ("email", "text")]
        def next_batch(self, max_rows):          # None when done; else at most max_rows rows
            return [{"id": 1, "email": "a@example.com"}]   # dicts, sequences or an EncodedBatch

`open` and `next_batch` are guarded (an exception becomes a plugin error value; a row that
does not fit its column becomes bad-row naming it); `columns` never traps (on an exception it
logs and returns no columns).
"""

from .plugin import encoded_to_wit, columns_to_wit, wrap_methods, _log_traceback
from .rows import BatchBuilder, Column, EncodedBatch

__all__ = ["SourceReader"]


class SourceReader:
    """Base of a source's `Reader`. Implement `__init__(self, config, query)`,
    `columns(self)` and `next_batch(self, max_rows)`."""

    def __init__(self, config, query):
        self.config_text = config
        self.query = query

    @classmethod
    def open(cls, config, query):
        return cls(config, query)

    def columns(self):
        return []

    def next_batch(self, max_rows):
        return None

    def _bf_columns(self):
        cols = self.__dict__.get("_bf_cols")
        if cols is None:
            cols = [Column.of(c) for c in self._bf_user_columns()]
            self.__dict__["_bf_cols"] = cols
        return cols

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        user_columns = cls.__dict__.get("columns")
        if user_columns is not None and not getattr(user_columns, "__backflow_adapted__", False):
            cls._bf_user_columns = user_columns

            def columns(self):
                try:
                    return columns_to_wit(self._bf_columns())
                except BaseException as e:  # noqa: BLE001 - columns cannot return an error
                    _log_traceback(e)
                    return []

            columns.__backflow_adapted__ = True
            cls.columns = columns
        user_next = cls.__dict__.get("next_batch")
        if user_next is not None and not getattr(user_next, "__backflow_adapted__", False):

            def next_batch(self, max_rows, _user=user_next):
                out = _user(self, max_rows)
                if out is None:
                    return None
                if not isinstance(out, EncodedBatch):
                    out = BatchBuilder(self._bf_columns()).extend(out).build()
                return encoded_to_wit(out)

            next_batch.__backflow_adapted__ = True
            cls.next_batch = next_batch
        wrap_methods(cls, ("open", "next_batch"))


SourceReader._bf_user_columns = SourceReader.columns
wrap_methods(SourceReader, ("open",))
