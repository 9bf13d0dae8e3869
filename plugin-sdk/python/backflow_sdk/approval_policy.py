"""Approval policies: base class of the `ApprovalPolicy` export and decisions.

componentize-py looks for the class in the app module: write
`class ApprovalPolicy(ApprovalPolicyBase)` next to `class Plugin`.

    from backflow_sdk.approval_policy import ApprovalPolicyBase, approve, require, reject

    class ApprovalPolicy(ApprovalPolicyBase):
        def evaluate(self, config, request):     # config: JSON text; request: ApprovalRequest
            if request.kind == RequestKind.RUN and sum(s.removed for s in request.syncs) > 100:
                return require(1, ["approver", "admin"], reason="removes many rows")
            return approve("small change")

`evaluate` is guarded: an exception becomes a plugin error value.
"""

from wit_world.exports import approval_policy as _wit

from .plugin import wrap_methods

__all__ = ["ApprovalPolicyBase", "approve", "require", "reject", "Role", "RequestKind", "ApprovalRequest", "SyncImpact", "role_name"]

Role = _wit.Role
RequestKind = _wit.RequestKind
ApprovalRequest = _wit.ApprovalRequest
SyncImpact = _wit.SyncImpact

_ROLE = {r.name.lower(): r for r in _wit.Role}


def role_name(role):
    """"admin", "approver", "contributor" or "viewer"."""
    return role.name.lower()


def approve(reason=""):
    return _wit.Decision_Approve(str(reason))


def reject(reason):
    return _wit.Decision_Reject(str(reason))


def require(count, roles=("approver", "admin"), allow_self_approval=False, reason=""):
    """`count` approvals from any of `roles` (names or `Role`s)."""
    rs = [_ROLE[r] if isinstance(r, str) else r for r in roles]
    return _wit.Decision_Require(
        _wit.ApprovalsNeeded(count=int(count), roles=rs, allow_self_approval=bool(allow_self_approval), reason=str(reason))
    )


_DECISIONS = (_wit.Decision_Approve, _wit.Decision_Require, _wit.Decision_Reject)


class ApprovalPolicyBase:
    """Base of the app module's `ApprovalPolicy` class. Implement `evaluate(self, config, request)`."""

    def evaluate(self, config, request):
        return approve("")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        user = cls.__dict__.get("evaluate")
        if user is not None and not getattr(user, "__backflow_adapted__", False):

            def evaluate(self, config, request, _user=user):
                d = _user(self, config, request)
                if not isinstance(d, _DECISIONS):
                    raise TypeError(f"evaluate returned {d!r}; return approve(...), require(...) or reject(...)")
                return d

            evaluate.__backflow_adapted__ = True
            cls.evaluate = evaluate
        wrap_methods(cls, ("evaluate",))
