"""Unit tests of destination.py, natively in CPython with a fake host (no backflow needed):
`python3 -m unittest discover -s test` after ./build.sh has written .bindings (./test.sh
runs them). They follow your config (test/config.json) and your rows (test/rows.jsonl, one
JSON object per line, the key first): edit those, not these tests, when your fields change."""

import json
import os
import unittest

from backflow_sdk import testing

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.dirname(HERE)


def read_rows():
    with open(os.path.join(HERE, "rows.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class DestinationTest(unittest.TestCase):
    def setUp(self):
        self.host = testing.load(PROJECT)
        from componentize_py_types import Err

        self.Err = Err
        with open(os.path.join(HERE, "config.json"), encoding="utf-8") as f:
            self.config = json.load(f)
        self.rows = read_rows()
        import app
        from destination import Writer

        self.app, self.Writer = app, Writer

    def test_the_config_passes_check_config(self):
        self.assertEqual(self.app.Plugin().check_config(json.dumps(self.config)), [])

    def test_a_2xx_accepts_every_row_and_sends_them(self):
        self.host.respond(200, {"ok": True})
        outcomes = testing.write_rows(self.Writer, self.config, "insert", self.rows)
        self.assertEqual(outcomes, ["accepted"] * len(self.rows))
        self.assertTrue(self.host.requests)
        key = next(iter(self.rows[0]))
        sent = "\n".join(r.text for r in self.host.requests)
        for row in self.rows:
            self.assertIn(json.dumps(row[key]), sent)

    def test_a_503_and_a_timeout_are_retryable(self):
        for script in (lambda: self.host.respond(503, "busy"), lambda: self.host.fail("timeout", "slow")):
            script()
            with self.assertRaises(self.Err) as e:
                testing.write_rows(self.Writer, self.config, "insert", self.rows)
            self.assertEqual(type(e.exception.value).__name__, "PluginError_Retryable")


if __name__ == "__main__":
    unittest.main()
