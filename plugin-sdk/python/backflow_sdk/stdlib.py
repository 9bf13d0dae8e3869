"""The standard-library modules a component needs but would not have (issue 41).

componentize-py snapshots the interpreter after importing the app: only the modules imported
by then are in the component; the standard library's files are not. A module the standard
library imports lazily, inside a function, is then missing at run time:
`collections.Counter.most_common` imports `heapq`, `datetime.strptime` imports `_strptime`,
`random.sample` reaches `statistics`... and the plugin fails with `ModuleNotFoundError` in the
middle of a run. Importing this module (the SDK's `__init__` does) loads them at build time.

`LAZY` lists the modules that the standard library's own functions import lazily (found by
walking the function bodies of the modules a plugin loads) plus the small pure-Python
modules plugins use most; importing each is cheap. A module that cannot load in WASI is
skipped, never an error: `PRELOADED` says which ones are in the component.

An author's own import inside a function is caught at build time by
`backflow_sdk.build_check` (build.sh runs it): move it to the top of the module.
"""

import importlib

LAZY = (
    # Imported inside standard-library functions.
    "heapq",  # collections.Counter.most_common, heapq.nlargest users
    "copy",  # collections.OrderedDict.copy, weakref, dataclasses.replace
    "_strptime",  # datetime.strptime, time.strptime
    "locale",  # _strptime, calendar
    "calendar",  # _strptime, email.utils
    "string",  # string.Template, ntpath
    "textwrap",  # textwrap.dedent/shorten
    "unicodedata",  # urllib.parse, re (\N{...})
    "statistics",  # random.choices/sample helpers
    "traceback",  # warnings, formatting exceptions
    "linecache",  # traceback, warnings
    "bisect",  # random.choices
    "fractions",  # statistics, decimal conversions
    "numbers",
    "operator",
    "itertools",
    "functools",
    "base64",
    "binascii",
    "hashlib",
    "hmac",
    "struct",
    "zlib",
    "uuid",
    "urllib.parse",
    "difflib",
    "fnmatch",
    "ipaddress",
    "pprint",
    "dataclasses",
    "enum",
    "typing",
    "csv",
    "io",
    "random",
    "decimal",
    "datetime",
    "json",
    "re",
    "math",
    "collections",
    "collections.abc",
)


def _preload():
    loaded = []
    for name in LAZY:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module WASI cannot load is left out, not an error
            continue
        loaded.append(name)
    return tuple(loaded)


PRELOADED = _preload()
