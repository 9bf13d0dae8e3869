"""{{name}}: a backflow quality check that fails a run sending too many nulls in one field.

Config: `{"column": "email", "max_null_percent": 0}`. Counts the rows the run would send
(added and changed) whose `column` is null; fails when their share is above the limit.

This module is the `plugin` export (spec, config check); the checker is in quality_check.py.
"""

import backflow_sdk as bf
from backflow_sdk.plugin import Plugin as PluginBase

CONFIG = bf.Config(
    column=bf.Field("string", required=True, description="The destination field to look at (after the sync's mapping)"),
    max_null_percent=bf.Field(
        "number", default=0, minimum=0, maximum=100, description="The largest share of null values allowed, in percent (0: none)"
    ),
)


class Plugin(PluginBase):
    SPEC = bf.Spec(
        name="{{name}}",
        version="0.1.0",
        kind="quality-check",
        description="Fails when too many rows the run would send have a null field.",
        config=CONFIG,
    )
