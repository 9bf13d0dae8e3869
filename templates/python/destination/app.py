"""{{name}}: a backflow destination that POSTs each batch of rows as JSON to an HTTP endpoint.

Body: `{"operation": "insert", "rows": [{"field": value, ...}, ...]}`. Decimals travel as
strings, timestamps as ISO 8601 (UTC), bytes as base64. The answer decides the outcome:
2xx: every row accepted; 429: rate limited (honouring Retry-After); 5xx or no connection:
retryable; any other status: every row rejected, with the status and the answer's text.

This module is the `plugin` export (spec, config check); the writer is in destination.py.
"""

import backflow_sdk as bf
from backflow_sdk.plugin import Plugin as PluginBase


def _http_url(url):
    if not url.startswith(("http://", "https://")):
        return f"{url!r} is not an http:// or https:// URL"
    return None


CONFIG = bf.Config(
    url=bf.Field("string", required=True, check=_http_url, description="Where to POST, e.g. https://api.example.com/v1/contacts"),
    headers=bf.Field("object", values="string", default={}, description='Extra request headers (Authorization = "Bearer ${env.TOKEN}")'),
)


class Plugin(PluginBase):
    SPEC = bf.Spec(
        name="{{name}}",
        version="0.1.0",
        kind="destination",
        description="POSTs each batch of rows as JSON to an HTTP endpoint.",
        config=CONFIG,
        operations=["insert", "update", "delete"],
        max_batch_size=500,
    )
