"""{{name}}: a backflow source that reads a JSON API: a GET answering an array of objects.

Config: `{"url": "https://api.example.com", "columns": [{"name": "id", "type": "integer"}]}`;
the model's query is the path to GET (`/v1/customers`). Each object becomes a row with the
declared columns (types: the contract's value types, wit/README.md); missing fields are null.

This module is the `plugin` export (spec, config check); the reader is in source.py.
"""

import backflow_sdk as bf
from backflow_sdk.plugin import Plugin as PluginBase


def _http_url(url):
    if not url.startswith(("http://", "https://")):
        return f"{url!r} is not an http:// or https:// URL"
    return None


def _not_empty(columns):
    return None if columns else "declare at least one column"


CONFIG = bf.Config(
    url=bf.Field("string", required=True, check=_http_url, description="The API's base URL; the query is appended"),
    columns=bf.Field(
        "array",
        required=True,
        check=_not_empty,
        description="The columns to read from each object",
        items=bf.Config(
            name=bf.Field("string", required=True),
            type=bf.Field("string", required=True, enum=bf.VALUE_TYPES),
        ),
    ),
)


class Plugin(PluginBase):
    SPEC = bf.Spec(
        name="{{name}}",
        version="0.1.0",
        kind="source",
        description="Reads a JSON API: the query is a path answering an array of objects.",
        config=CONFIG,
    )
