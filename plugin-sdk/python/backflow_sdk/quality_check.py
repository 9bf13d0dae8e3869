"""Quality checks: base class of the `Checker` resource and check results.

componentize-py looks for the resource class in a top-level module named after the
interface: write `class Checker(QualityChecker)` in your project's `quality_check.py`.

    from backflow_sdk.quality_check import QualityChecker, check_result

    class Checker(QualityChecker):
        def __init__(self, config, plan):        # config: JSON text; plan: PlanSummary
            ...
        def observe(self, kind, after, before):  # kind: "added" | "changed" | "removed" | "unchanged"
            ...                                  # after: Batch; before: Batch or None
        def finish(self):
            return check_result("pass", "all good")   # or "warn"/"fail" with samples

`open`, `observe` and `finish` are guarded: an exception becomes a plugin error value.
"""

from wit_world.exports import quality_check as _wit

from .plugin import batch_from_wit, wrap_methods
from .rows import Row, json_dumps

__all__ = ["QualityChecker", "check_result", "PlanSummary"]

PlanSummary = _wit.PlanSummary

_VERDICT = {"pass": _wit.Verdict.PASS, "warn": _wit.Verdict.WARN, "fail": _wit.Verdict.FAIL}
_KIND_NAMES = {k: k.name.lower() for k in _wit.ChangeKind}


def check_result(verdict, message, samples=()):
    """A generated `CheckResult`: verdict "pass", "warn" or "fail"; samples are rows (Row
    views or dicts, written as JSON objects) or JSON text."""
    out = []
    for s in samples:
        if isinstance(s, str):
            out.append(s)
        elif isinstance(s, Row):
            out.append(json_dumps(s.to_dict()))
        else:
            out.append(json_dumps(s))
    v = _VERDICT[verdict] if isinstance(verdict, str) else verdict
    return _wit.CheckResult(verdict=v, message=str(message), samples=out)


class QualityChecker:
    """Base of a quality check's `Checker`. Implement `__init__(self, config, plan)`,
    `observe(self, kind, after, before)` and `finish(self)`."""

    def __init__(self, config, plan):
        self.config_text = config
        self.plan = plan

    @classmethod
    def open(cls, config, plan):
        return cls(config, plan)

    def observe(self, kind, after, before):
        return None

    def finish(self):
        return check_result("pass", "")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        user_observe = cls.__dict__.get("observe")
        if user_observe is not None and not getattr(user_observe, "__backflow_adapted__", False):

            def observe(self, kind, after, before, _user=user_observe):
                _user(self, _KIND_NAMES[kind], batch_from_wit(after), None if before is None else batch_from_wit(before))

            observe.__backflow_adapted__ = True
            cls.observe = observe
        user_finish = cls.__dict__.get("finish")
        if user_finish is not None and not getattr(user_finish, "__backflow_adapted__", False):

            def finish(self, _user=user_finish):
                r = _user(self)
                if isinstance(r, _wit.CheckResult):
                    return r
                if r is None:
                    return check_result("pass", "")
                if isinstance(r, tuple):
                    return check_result(*r)
                raise TypeError(f"finish returned {r!r}; return check_result(verdict, message, samples)")

            finish.__backflow_adapted__ = True
            cls.finish = finish
        wrap_methods(cls, ("open", "observe", "finish"))


wrap_methods(QualityChecker, ("open",))
