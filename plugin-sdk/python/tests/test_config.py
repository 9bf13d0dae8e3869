"""Config parsing with field-named problems, and the JSON Schema it publishes."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backflow_sdk import VALUE_TYPES, Config, ConfigInvalid, Field, Problem, Spec, expand_secrets  # noqa: E402


def url_check(v):
    return None if v.startswith(("http://", "https://")) else "must be an http:// or https:// URL"


CONFIG = Config(
    url=Field("string", required=True, description="Where to send", check=url_check),
    headers=Field("object", values="string"),
    max_null_percent=Field("number", default=0, minimum=0, maximum=100),
    retries=Field("integer", default=3),
    verbose=Field("boolean", default=False),
    columns=Field(
        "array",
        items=Config(name=Field("string", required=True), type=Field("string", enum=VALUE_TYPES, default="any")),
    ),
)


class Check(unittest.TestCase):
    def test_a_good_config_loads_with_defaults(self):
        c = CONFIG.load('{"url": "http://127.0.0.1:1/x", "headers": {"X-Key": "k"}, "columns": [{"name": "id"}]}')
        self.assertEqual(
            c,
            {
                "url": "http://127.0.0.1:1/x",
                "headers": {"X-Key": "k"},
                "max_null_percent": 0,
                "retries": 3,
                "verbose": False,
                "columns": [{"name": "id", "type": "any"}],
            },
        )

    def test_every_problem_names_its_dotted_field(self):
        problems = CONFIG.check(
            json.dumps(
                {
                    "url": "ftp://x",
                    "headers": {"Authorization": 5, "ok": "y"},
                    "max_null_percent": 101,
                    "retries": 1.5,
                    "verbose": "yes",
                    "columns": [{"name": "a", "type": "string"}, {"type": "text"}, 7],
                    "extra": 1,
                }
            )
        )
        fields = [p.field for p in problems]
        self.assertEqual(
            fields,
            ["url", "headers.Authorization", "max_null_percent", "retries", "verbose", "columns[0].type", "columns[1].name", "columns[2]", "extra"],
        )
        by = {p.field: p.message for p in problems}
        self.assertEqual(by["url"], "must be an http:// or https:// URL")
        self.assertEqual(by["headers.Authorization"], "must be a string, not a number")
        self.assertIn("at most 100", by["max_null_percent"])
        self.assertIn("must be an integer", by["retries"])
        self.assertIn("must be one of", by["columns[0].type"])
        self.assertEqual(by["columns[1].name"], "is required")
        self.assertIn("unknown field", by["extra"])

    def test_missing_required_and_whole_config_problems(self):
        self.assertEqual(CONFIG.check("{}"), [Problem("url", "is required")])
        self.assertEqual(CONFIG.check(""), [Problem("url", "is required")])
        [p] = CONFIG.check("[1]")
        self.assertEqual(p.field, "")
        [p] = CONFIG.check("{nope")
        self.assertEqual(p.field, "")
        self.assertIn("not JSON", p.message)

    def test_null_means_absent(self):
        self.assertEqual(CONFIG.load('{"url": "http://a", "retries": null}')["retries"], 3)

    def test_load_raises_with_every_problem(self):
        with self.assertRaises(ConfigInvalid) as e:
            CONFIG.load('{"headers": {"A": 1}}')
        self.assertEqual([p.field for p in e.exception.problems], ["url", "headers.A"])
        self.assertIn("url: is required", str(e.exception))

    def test_checks_may_raise(self):
        def positive(v):
            if v <= 0:
                raise ValueError("must be positive")

        c = Config(n=Field("number", check=positive))
        self.assertEqual(c.check('{"n": -1}'), [Problem("n", "must be positive")])
        self.assertEqual(c.check('{"n": 1}'), [])

    def test_allow_unknown(self):
        c = Config(allow_unknown=True, a=Field("string"))
        self.assertEqual(c.load('{"b": 1}'), {"a": None, "b": 1})

    def test_json_schema(self):
        s = CONFIG.json_schema()
        self.assertEqual(s["$schema"], "https://json-schema.org/draft/2020-12/schema")
        self.assertEqual(s["type"], "object")
        self.assertEqual(s["required"], ["url"])
        self.assertFalse(s["additionalProperties"])
        self.assertEqual(s["properties"]["headers"], {"type": "object", "additionalProperties": {"type": "string"}})
        self.assertEqual(s["properties"]["max_null_percent"], {"type": "number", "default": 0, "minimum": 0, "maximum": 100})
        items = s["properties"]["columns"]["items"]
        self.assertEqual(items["required"], ["name"])
        self.assertEqual(items["properties"]["type"]["enum"], list(VALUE_TYPES))


class Secrets(unittest.TestCase):
    def test_env_references_are_replaced(self):
        env = {"TOKEN": "s3cret", "A": "1"}
        self.assertEqual(expand_secrets("Bearer ${env.TOKEN}", environ=env), "Bearer s3cret")
        self.assertEqual(expand_secrets("${env.A}-${env.A}", environ=env), "1-1")
        self.assertEqual(expand_secrets("plain", environ=env), "plain")

    def test_a_missing_variable_is_named(self):
        with self.assertRaises(ValueError) as e:
            expand_secrets("${env.NOPE}", "destination", environ={})
        self.assertIn("NOPE is not set or not granted to this destination", str(e.exception))
        with self.assertRaises(ValueError):
            expand_secrets("${env.OPEN", environ={})


class SpecTest(unittest.TestCase):
    def test_spec_publishes_the_config_schema(self):
        s = Spec("x", "0.1.0", "destination", config=CONFIG, operations=["insert"], max_batch_size=500)
        self.assertEqual(json.loads(s.config_schema_text()), CONFIG.json_schema())
        self.assertEqual(json.loads(Spec("x", "1", "source").config_schema_text())["type"], "object")

    def test_spec_refuses_unknown_kinds_and_operations(self):
        with self.assertRaises(ValueError):
            Spec("x", "1", "sink")
        with self.assertRaises(ValueError):
            Spec("x", "1", "destination", operations=["upsert"])


if __name__ == "__main__":
    unittest.main()
