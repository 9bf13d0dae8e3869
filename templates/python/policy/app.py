"""{{name}}: a backflow approval policy: runs that remove many rows need an approver.

Config: `{"max_removed": 100}`. A run whose syncs would remove more rows than that in all
needs one approval from an approver or admin other than its author; everything else goes
ahead.

componentize-py looks for both classes here: `Plugin` (the `plugin` export: spec, config
check) and `ApprovalPolicy` (the `approval-policy` export: `evaluate`).
"""

import backflow_sdk as bf
from backflow_sdk.approval_policy import ApprovalPolicyBase, RequestKind, approve, require
from backflow_sdk.plugin import Plugin as PluginBase

CONFIG = bf.Config(
    max_removed=bf.Field("integer", default=100, minimum=0, description="Rows a run may remove without approval"),
)


class Plugin(PluginBase):
    SPEC = bf.Spec(
        name="{{name}}",
        version="0.1.0",
        kind="approval-policy",
        description="Runs that remove more than max_removed rows need an approver.",
        config=CONFIG,
    )


class ApprovalPolicy(ApprovalPolicyBase):
    def evaluate(self, config, request):
        limit = CONFIG.load(config)["max_removed"]
        removed = sum(s.removed for s in request.syncs)
        if request.kind == RequestKind.RUN and removed > limit:
            return require(
                1,
                roles=["approver", "admin"],
                allow_self_approval=False,
                reason=f"the run removes {removed} rows, more than {limit}",
            )
        return approve(f"{removed} rows removed, at most {limit} without approval")
