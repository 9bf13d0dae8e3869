"""The checker of {{name}} (componentize-py looks for the `Checker` class in this module,
named after the contract's `quality-check` interface)."""

from backflow_sdk.plugin import Error
from backflow_sdk.quality_check import QualityChecker, check_result

from app import CONFIG

MAX_SAMPLES = 5


class Checker(QualityChecker):
    def __init__(self, config, plan):
        self.config = CONFIG.load(config)
        self.column = self.config["column"]
        if not any(c.name == self.column for c in plan.columns):
            raise Error.bad_config("column", f"sync {plan.sync_name} sends no field {self.column!r}")
        self.seen = 0
        self.nulls = 0
        self.samples = []

    def observe(self, kind, after, before):
        # Only rows the run would send; removed rows carry only their key.
        if kind not in ("added", "changed") or self.column not in after.names:
            return
        values = after.column(self.column)
        self.seen += len(values)
        for i, value in enumerate(values):
            if value is None:
                self.nulls += 1
                if len(self.samples) < MAX_SAMPLES:
                    self.samples.append(after.row(i).to_dict())

    def finish(self):
        percent = self.nulls * 100 / self.seen if self.seen else 0.0
        limit = self.config["max_null_percent"]
        message = f"{self.nulls} of {self.seen} rows to send have no {self.column} ({percent:.1f}%, at most {limit}% allowed)"
        return check_result("fail" if percent > limit else "pass", message, self.samples)
