"""backflow_sdk.build_check and backflow_sdk.stdlib (issue 41): a module imported inside a
function would be missing from the component; the build names it, and the standard library's
own lazy imports are preloaded."""

import os
import sys
import tempfile
import textwrap
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backflow_sdk import build_check, stdlib  # noqa: E402


def project(files):
    root = tempfile.mkdtemp()
    for name, text in files.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
    return root


class BuildCheckTest(unittest.TestCase):
    def test_an_import_inside_a_function_is_named_with_file_and_line(self):
        root = project(
            {
                "app.py": """\
                    import json

                    def finish():
                        import xml.dom.minidom
                        from json import dumps
                        return dumps(1)
                    """,
            }
        )
        found = build_check.problems(root)
        self.assertEqual(len(found), 1, found)
        self.assertIn("app.py:4: `import xml.dom.minidom` runs inside a function", found[0])
        self.assertIn("import xml.dom.minidom at the top of app.py", found[0])
        self.assertEqual(build_check.main(["build_check", root]), 1)

    def test_covered_imports_pass(self):
        root = project(
            {
                # heapq is preloaded; xml.dom is imported at the top of another module;
                # the project's own modules and the bindings are always there.
                "app.py": """\
                    import xml.dom.minidom

                    class Checker:
                        def finish(self):
                            import heapq
                            import xml.dom.minidom
                            from helpers import top
                            from wit_world.imports import host
                            return heapq, top, host
                    """,
                "helpers.py": "def top():\n    return 1\n",
                # Tests and the virtualenv are not the plugin's sources.
                "test/test_app.py": "def test():\n    import sqlite3\n",
                ".venv/lib/x.py": "def f():\n    import sqlite3\n",
            }
        )
        self.assertEqual(build_check.problems(root), [])
        self.assertEqual(build_check.main(["build_check", root]), 0)

    def test_counter_most_common_needs_heapq_and_it_is_preloaded(self):
        self.assertIn("heapq", stdlib.PRELOADED)
        self.assertIn("_strptime", stdlib.PRELOADED)
        import collections

        self.assertEqual(collections.Counter("abca").most_common(1), [("a", 2)])


if __name__ == "__main__":
    unittest.main()
