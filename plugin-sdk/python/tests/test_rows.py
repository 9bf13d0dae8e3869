"""Row batches in the JSON row encoding: decoding every value type, encoding, round trips.

The wire texts are the engine's (plugin-sdk/src/json_rows.rs tests)."""

import json
import math
import os
import sys
import unittest
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from backflow_sdk import (  # noqa: E402
    MAX_SAFE_INTEGER,
    Batch,
    BatchBuilder,
    Column,
    DecodeError,
    EncodeError,
    Row,
    decode_value,
    encode_rows,
    encode_value,
    format_timestamp,
    json_dumps,
    parse_timestamp,
    to_json_value,
)

UTC = timezone.utc

TYPED = [
    Column("b", "boolean"),
    Column("i", "integer"),
    Column("f", "float"),
    Column("d", "decimal"),
    Column("t", "text"),
    Column("y", "bytes"),
    Column("ts", "timestamp"),
    Column("dt", "date"),
    Column("j", "json"),
]

# What the engine sends for typed_row(7, 1.0) and a row of nulls.
ENGINE_TYPED = (
    '[[true,7,1.0,"-12.50","\u00e9 \\"q\\"\\n","AAH/","2023-11-14T22:13:20.123456Z","1969-12-31",{"a":[1,2]}],'
    "[null,null,null,null,null,null,null,null,null]]"
)

# What the engine sends for an `any` column (json_rows.rs any_columns_tag_what_json_lacks_and_round_trip).
ENGINE_ANY = (
    '[[null],[false],[3],[{"integer":"9223372036854775807"}],[3.0],[{"float":"Infinity"}],'
    '["{\\"decimal\\": \\"1\\"}"],[{"decimal":"1.50"}],[{"bytes":""}],[{"timestamp":"1970-01-01T00:00:00Z"}],'
    '[{"date":"1970-01-01"}],[{"json":[1]}],[{"json":null}]]'
)


def typed_values():
    return {
        "b": True,
        "i": 7,
        "f": 1.0,
        "d": Decimal("-12.50"),
        "t": 'é "q"\n',
        "y": b"\x00\x01\xff",
        "ts": datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC),
        "dt": date(1969, 12, 31),
        "j": {"a": [1, 2]},
    }


class DecodeTyped(unittest.TestCase):
    def setUp(self):
        self.batch = Batch(TYPED, 2, ENGINE_TYPED.encode("utf-8"))

    def test_every_type_decodes_to_its_python_type(self):
        row = self.batch.row(0)
        self.assertEqual(row.to_dict(), typed_values())
        self.assertIs(type(row["i"]), int)
        self.assertIs(type(row["f"]), float)
        self.assertIsInstance(row["d"], Decimal)
        self.assertEqual(str(row["d"]), "-12.50")  # exact, trailing zero kept
        self.assertIs(row["ts"].tzinfo, UTC)
        self.assertEqual(row["ts"].microsecond, 123456)
        self.assertIs(type(row["dt"]), date)
        self.assertIs(type(row["y"]), bytes)

    def test_nulls_are_none_in_every_column(self):
        self.assertEqual(self.batch.row(1).to_dict(), {c.name: None for c in TYPED})

    def test_row_views(self):
        rows = list(self.batch)
        self.assertEqual(len(rows), 2)
        self.assertEqual(len(self.batch), 2)
        r = rows[0]
        self.assertIsInstance(r, Row)
        self.assertEqual(r.index, 0)
        self.assertEqual(rows[1].index, 1)
        self.assertEqual(r.get("t"), 'é "q"\n')
        self.assertEqual(r.get("missing", "x"), "x")
        self.assertEqual(r[1], 7)
        self.assertEqual(r[-1], {"a": [1, 2]})
        self.assertIn("ts", r)
        self.assertNotIn("nope", r)
        self.assertEqual(list(r), [c.name for c in TYPED])
        self.assertEqual(r.keys(), [c.name for c in TYPED])
        self.assertEqual(len(r), 9)
        self.assertEqual(r.raw[1], 7)
        self.assertEqual(dict(r.items()), typed_values())
        with self.assertRaises(KeyError) as e:
            r["nope"]
        self.assertIn("no column 'nope'", str(e.exception))

    def test_column_and_dicts(self):
        self.assertEqual(self.batch.column("d"), [Decimal("-12.50"), None])
        self.assertEqual(self.batch.column("t"), ['é "q"\n', None])
        self.assertEqual(self.batch.dicts()[0], typed_values())
        self.assertEqual(self.batch.names, [c.name for c in TYPED])
        with self.assertRaises(KeyError):
            self.batch.column("nope")

    def test_the_payload_is_parsed_once_and_only_when_read(self):
        b = Batch(TYPED, 1, b"not json at all")
        self.assertEqual(len(b), 1)  # no parse yet
        with self.assertRaises(ValueError):
            list(b)
        b = Batch(TYPED, 2, ENGINE_TYPED.encode())
        raw = b.raw
        self.assertIs(b.raw, raw)

    def test_payload_shape_is_checked(self):
        with self.assertRaises(ValueError) as e:
            Batch(TYPED, 3, ENGINE_TYPED.encode()).raw
        self.assertIn("holds 2 rows, the batch says 3", str(e.exception))
        with self.assertRaises(ValueError):
            Batch(TYPED, 1, b'{"a": 1}').raw


class DecodeEdges(unittest.TestCase):
    def test_integers_beyond_2_53_are_digit_strings(self):
        cols = [Column("i", "integer")]
        b = Batch(cols, 3, b'[["-9223372036854775808"],["9007199254740993"],[9007199254740991]]')
        self.assertEqual(b.column("i"), [-(2**63), 9007199254740993, MAX_SAFE_INTEGER])

    def test_non_finite_floats(self):
        b = Batch([Column("f", "float")], 4, b'[["NaN"],["Infinity"],["-Infinity"],[3]]')
        v = b.column("f")
        self.assertTrue(math.isnan(v[0]))
        self.assertEqual(v[1:], [math.inf, -math.inf, 3.0])
        self.assertIs(type(v[3]), float)

    def test_decimals_are_exact(self):
        b = Batch([Column("d", "decimal")], 2, b'[["12345678901234567890.123456789"],["0.10"]]')
        self.assertEqual(b.column("d"), [Decimal("12345678901234567890.123456789"), Decimal("0.10")])
        self.assertEqual(str(b.row(1)["d"]), "0.10")

    def test_timestamps(self):
        col = [Column("ts", "timestamp")]
        b = Batch(
            col,
            5,
            b'[["2024-05-01T12:00:00Z"],["2024-05-01T12:00:00.123Z"],["2024-05-01T12:00:00.000001Z"],'
            b'["2024-01-01T02:00:00.1234567+02:00"],["1969-12-31T23:59:59.999999Z"]]',
        )
        v = b.column("ts")
        self.assertEqual(v[0], datetime(2024, 5, 1, 12, tzinfo=UTC))
        self.assertEqual(v[1], datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC))
        self.assertEqual(v[2].microsecond, 1)
        self.assertEqual(v[3], datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC))
        self.assertEqual(v[4], datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
        for t in v:
            self.assertIs(t.tzinfo, UTC)

    def test_parse_timestamp_leniency(self):
        self.assertEqual(parse_timestamp("2024-01-01 00:00:00.5z"), datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC))
        self.assertEqual(parse_timestamp("2024-01-01T00:00:00.123456789-01:30"), datetime(2024, 1, 1, 1, 30, 0, 123456, tzinfo=UTC))

    def test_bytes_and_dates(self):
        b = Batch([Column("y", "bytes"), Column("d", "date")], 2, b'[["",  "2000-02-29"],["AAE=","0001-01-01"]]')
        self.assertEqual(b.column("y"), [b"", b"\x00\x01"])
        self.assertEqual(b.column("d"), [date(2000, 2, 29), date(1, 1, 1)])

    def test_json_documents_are_inline(self):
        b = Batch([Column("j", "json")], 3, b'[[{"a":{"b":[1,"x",null]}}],[[1,2]],["text doc"]]')
        self.assertEqual(b.column("j"), [{"a": {"b": [1, "x", None]}}, [1, 2], "text doc"])

    def test_any_columns_decode_tagged_values(self):
        b = Batch([Column("v", "any")], 13, ENGINE_ANY.encode())
        self.assertEqual(
            b.column("v"),
            [
                None,
                False,
                3,
                2**63 - 1,
                3.0,
                math.inf,
                '{"decimal": "1"}',
                Decimal("1.50"),
                b"",
                datetime(1970, 1, 1, tzinfo=UTC),
                date(1970, 1, 1),
                [1],
                None,
            ],
        )
        self.assertIs(type(b.row(4)["v"]), float)
        self.assertIs(type(b.row(2)["v"]), int)

    def test_a_value_that_does_not_fit_names_row_and_column(self):
        b = Batch([Column("id", "integer"), Column("mrr", "decimal")], 2, b'[[1,"1.5"],[2,1.5]]')
        rows = list(b)
        self.assertEqual(rows[0]["mrr"], Decimal("1.5"))
        with self.assertRaises(DecodeError) as e:
            rows[1]["mrr"]
        self.assertEqual(e.exception.row_index, 1)
        self.assertEqual(e.exception.column, "mrr")
        self.assertIn("row 1, column 'mrr'", str(e.exception))
        with self.assertRaises(DecodeError) as e:
            b.column("mrr")
        self.assertEqual(e.exception.row_index, 1)
        for bad in (b'[["x"]]', b"[[true]]", b"[[1.5]]"):
            with self.assertRaises(DecodeError):
                Batch([Column("i", "integer")], 1, bad).row(0)["i"]
        for bad in (b'[[{"a":1}]]', b"[[[1]]]", b'[[{"decimal":null}]]', b'[[{"decimal":"x"}]]', b"[[{}]]"):
            with self.assertRaises(DecodeError, msg=bad):
                Batch([Column("v", "any")], 1, bad).row(0)["v"]
        for vt, bad in (("bytes", '"!!"'), ("date", '"2000-02-30"'), ("timestamp", '"yesterday"'), ("float", '"nan"')):
            with self.assertRaises(DecodeError, msg=vt):
                Batch([Column("x", vt)], 1, f"[[{bad}]]".encode()).row(0)["x"]

    def test_decode_value(self):
        self.assertEqual(decode_value("decimal", "1.0"), Decimal("1.0"))
        self.assertIsNone(decode_value("timestamp", None))
        self.assertEqual(decode_value("text", "x"), "x")

    def test_columns_from_tuples_and_dicts(self):
        b = Batch([("a", "integer"), {"name": "b", "type": "text"}], 1, b'[[1,"x"]]')
        self.assertEqual(b.row(0).to_dict(), {"a": 1, "b": "x"})
        with self.assertRaises(ValueError):
            Column("x", "string")


class Encode(unittest.TestCase):
    def test_typed_values_encode_as_the_engine_writes_them(self):
        built = encode_rows(TYPED, [typed_values(), {}])
        self.assertEqual(built.row_count, 2)
        self.assertEqual(json.loads(built.payload), json.loads(ENGINE_TYPED))
        # and floats keep their `.0`
        self.assertIn(b",1.0,", built.payload)

    def test_round_trip_typed(self):
        values = [typed_values(), {c.name: None for c in TYPED}]
        built = encode_rows(TYPED, values)
        self.assertEqual(Batch(built.columns, built.row_count, built.payload).dicts(), values)

    def test_what_json_cannot_hold_exactly_is_a_string(self):
        built = encode_rows([Column("i", "integer"), Column("f", "float")], [[-(2**63), math.nan], [MAX_SAFE_INTEGER + 2, -math.inf], [MAX_SAFE_INTEGER, 2]])
        self.assertEqual(built.payload, b'[["-9223372036854775808","NaN"],["9007199254740993","-Infinity"],[9007199254740991,2.0]]')

    def test_any_values_are_tagged_like_the_engine(self):
        values = [
            None,
            False,
            3,
            2**63 - 1,
            3.0,
            math.inf,
            '{"decimal": "1"}',
            Decimal("1.50"),
            b"",
            datetime(1970, 1, 1, tzinfo=UTC),
            date(1970, 1, 1),
            [1],
        ]
        built = encode_rows([Column("v", "any")], [[v] for v in values])
        self.assertEqual(json.loads(built.payload), json.loads(ENGINE_ANY)[:-1])
        self.assertEqual(Batch(built.columns, built.row_count, built.payload).column("v"), values)

    def test_timestamps_are_utc_with_0_3_or_6_digits(self):
        self.assertEqual(format_timestamp(datetime(2024, 5, 1, 12, tzinfo=UTC)), "2024-05-01T12:00:00Z")
        self.assertEqual(format_timestamp(datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)), "2024-05-01T12:00:00.123Z")
        self.assertEqual(format_timestamp(datetime(2024, 5, 1, 12, 0, 0, 123400, tzinfo=UTC)), "2024-05-01T12:00:00.123400Z")
        plus2 = timezone(timedelta(hours=2))
        self.assertEqual(format_timestamp(datetime(2024, 5, 1, 14, tzinfo=plus2)), "2024-05-01T12:00:00Z")
        self.assertEqual(format_timestamp(datetime(2024, 5, 1, 12)), "2024-05-01T12:00:00Z")  # naive = UTC
        self.assertEqual(encode_value("timestamp", 0), "1970-01-01T00:00:00Z")
        self.assertEqual(encode_value("timestamp", "2024-01-01T02:00:00+02:00"), "2024-01-01T00:00:00Z")

    def test_decimals_never_use_exponents(self):
        self.assertEqual(encode_value("decimal", Decimal("1E+3")), "1000")
        self.assertEqual(encode_value("decimal", Decimal("1E-7")), "0.0000001")
        self.assertEqual(encode_value("decimal", 0.1), "0.1")
        self.assertEqual(encode_value("decimal", 12), "12")
        self.assertEqual(encode_value("decimal", "-12.50"), "-12.50")
        with self.assertRaises(ValueError):
            encode_value("decimal", Decimal("NaN"))

    def test_builder_checks_values_and_names_row_and_column(self):
        b = BatchBuilder([Column("id", "integer", nullable=False), Column("email", "text")])
        b.add({"id": 1, "email": "a@x"}).add((2, None))
        with self.assertRaises(EncodeError) as e:
            b.add({"id": "x"})
        self.assertEqual((e.exception.row_index, e.exception.column), (2, "id"))
        with self.assertRaises(EncodeError) as e:
            b.add({"email": "b@x"})
        self.assertIn("not nullable", str(e.exception))
        with self.assertRaises(EncodeError):
            b.add((1,))
        with self.assertRaises(EncodeError):
            b.add({"id": True})
        with self.assertRaises(EncodeError):
            b.add({"id": 2**63})
        built = b.build()
        self.assertEqual((built.row_count, built.payload), (2, b'[[1,"a@x"],[2,null]]'))
        self.assertEqual(len(b), 0)

    def test_rows_of_a_batch_can_be_added_to_a_builder(self):
        src = Batch(TYPED, 2, ENGINE_TYPED.encode())
        built = BatchBuilder(TYPED).extend(src).build()
        self.assertEqual(json.loads(built.payload), json.loads(ENGINE_TYPED))

    def test_json_dumps_of_native_values(self):
        v = {
            "d": Decimal("1.50"),
            "ts": datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=UTC),
            "dt": date(2024, 5, 1),
            "y": b"\x00\x01",
            "f": math.nan,
            "n": [1, 2.5, None],
        }
        self.assertEqual(
            json_dumps(v),
            '{"d":"1.50","ts":"2024-05-01T12:00:00.000005Z","dt":"2024-05-01","y":"AAE=","f":"NaN","n":[1,2.5,null]}',
        )
        row = Batch(TYPED, 2, ENGINE_TYPED.encode()).row(0)
        self.assertEqual(to_json_value(row)["d"], "-12.50")
        self.assertEqual(json_dumps({"é": "ü"}), '{"é":"ü"}')


if __name__ == "__main__":
    unittest.main()
