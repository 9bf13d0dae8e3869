// Decoding and encoding values and batches in the JSON row encoding (wit/README.md).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Batch, Row, Timestamp, decodeValue, encodeValue, encodeBatch, base64Encode, base64Decode, VALUE_TYPES, PluginError } from '../backflow.js';

const enc = (v) => new TextEncoder().encode(JSON.stringify(v));

test('integers: numbers, and BigInt only beyond 2^53', () => {
  assert.equal(decodeValue('integer', 42), 42);
  assert.equal(decodeValue('integer', -9007199254740991), -9007199254740991);
  assert.equal(decodeValue('integer', '9007199254740993'), 9007199254740993n);
  assert.equal(decodeValue('integer', '-9223372036854775808'), -9223372036854775808n);
  assert.equal(decodeValue('integer', '12'), 12); // lenient: a small string is a number
  assert.equal(decodeValue('integer', null), null);
});

test('floats: numbers and the NaN/Infinity strings', () => {
  assert.equal(decodeValue('float', 1.5), 1.5);
  assert.ok(Number.isNaN(decodeValue('float', 'NaN')));
  assert.equal(decodeValue('float', 'Infinity'), Infinity);
  assert.equal(decodeValue('float', '-Infinity'), -Infinity);
});

test('decimal, text and date stay strings; json is the document', () => {
  assert.equal(decodeValue('decimal', '-12.50'), '-12.50');
  assert.equal(decodeValue('decimal', '12345678901234567890.123'), '12345678901234567890.123');
  assert.equal(decodeValue('text', 'héllo'), 'héllo');
  assert.equal(decodeValue('date', '2024-05-01'), '2024-05-01');
  assert.deepEqual(decodeValue('json', { a: [1, 2, { b: null }] }), { a: [1, 2, { b: null }] });
  assert.equal(decodeValue('boolean', false), false);
});

test('bytes: base64 to Uint8Array', () => {
  assert.deepEqual(decodeValue('bytes', 'AAE='), new Uint8Array([0, 1]));
  assert.deepEqual(decodeValue('bytes', ''), new Uint8Array([]));
});

test('base64 matches Buffer for every length and byte', () => {
  for (let n = 0; n < 70; n++) {
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = (i * 97 + n * 31) & 255;
    const b64 = base64Encode(bytes);
    assert.equal(b64, Buffer.from(bytes).toString('base64'));
    assert.deepEqual(base64Decode(b64), bytes);
  }
  assert.deepEqual(base64Decode('_-8'), new Uint8Array([0xff, 0xef])); // url-safe, unpadded
  assert.throws(() => base64Decode('A'), /base64/);
  assert.throws(() => base64Decode('AA$='), /base64/);
});

test('timestamps: a Date that keeps microseconds', () => {
  const t = decodeValue('timestamp', '2024-05-01T12:00:00.123456Z');
  assert.ok(t instanceof Date && t instanceof Timestamp);
  assert.equal(t.toISOString(), '2024-05-01T12:00:00.123Z');
  assert.equal(t.microsecond, 456);
  assert.equal(t.micros, 1714564800123456n);
  assert.equal(t.toJSON(), '2024-05-01T12:00:00.123456Z');
  assert.equal(JSON.stringify({ t }), '{"t":"2024-05-01T12:00:00.123456Z"}');
  const whole = decodeValue('timestamp', '2024-05-01T12:00:00Z');
  assert.equal(whole.getTime(), Date.UTC(2024, 4, 1, 12));
  assert.equal(whole.toJSON(), '2024-05-01T12:00:00.000Z');
  assert.equal(decodeValue('timestamp', '2024-05-01T12:00:00.123Z').micros, 1714564800123000n);
  // Before the epoch: the millisecond is floored, the microseconds count up from it.
  const before = decodeValue('timestamp', '1969-12-31T23:59:59.999500Z');
  assert.equal(before.micros, -500n);
  assert.equal(before.getTime(), -1);
  // Offsets and 9 digits (what a source may return) are read exactly to the microsecond.
  assert.equal(Timestamp.fromString('2024-05-01T14:00:00.123456789+02:00').micros, 1714564800123456n);
  assert.equal(Timestamp.fromString('0005-03-01T00:00:00Z').getUTCFullYear(), 5);
  assert.equal(Timestamp.fromMicros(-500n).toJSON(), '1969-12-31T23:59:59.999500Z');
  assert.throws(() => decodeValue('timestamp', 'yesterday'), /RFC 3339/);
});

test('any: plain JSON values and tagged one-key objects', () => {
  assert.equal(decodeValue('any', true), true);
  assert.equal(decodeValue('any', 3), 3);
  assert.equal(decodeValue('any', 2.5), 2.5);
  assert.equal(decodeValue('any', 'x'), 'x');
  assert.equal(decodeValue('any', { decimal: '1.50' }), '1.50');
  assert.deepEqual(decodeValue('any', { bytes: 'AAE=' }), new Uint8Array([0, 1]));
  assert.equal(decodeValue('any', { timestamp: '2024-05-01T12:00:00.000001Z' }).micros, 1714564800000001n);
  assert.equal(decodeValue('any', { date: '2024-05-01' }), '2024-05-01');
  assert.deepEqual(decodeValue('any', { json: { a: 1 } }), { a: 1 });
  assert.equal(decodeValue('any', { integer: '9007199254740993' }), 9007199254740993n);
  assert.ok(Number.isNaN(decodeValue('any', { float: 'NaN' })));
  assert.throws(() => decodeValue('any', { what: 1 }), /unknown tag/);
});

const columns = [
  { name: 'id', valueType: 'integer', nullable: false },
  { name: 'email', valueType: 'text', nullable: true },
  { name: 'mrr', valueType: 'decimal', nullable: true },
  { name: 'at', valueType: 'timestamp', nullable: true },
  { name: 'blob', valueType: 'bytes', nullable: true },
  { name: 'extra', valueType: 'any', nullable: true },
  { name: 'doc', valueType: 'json', nullable: true },
];
const wireRows = [
  [1, 'a@example.com', '10.50', '2024-05-01T12:00:00Z', 'AAE=', { decimal: '1.5' }, { k: [1] }],
  ['9007199254740993', null, null, null, null, 7, null],
];
const rowBatch = () => ({ columns, rowCount: 2, payload: enc(wireRows) });

test('Batch: rows, get, column, toObject, toJSON', () => {
  const b = new Batch(rowBatch());
  assert.equal(b.length, 2);
  assert.deepEqual(b.names, ['id', 'email', 'mrr', 'at', 'blob', 'extra', 'doc']);
  const rows = b.rows();
  assert.equal(rows.length, 2);
  assert.equal(rows[0].get('email'), 'a@example.com');
  assert.equal(rows[0].index, 0);
  assert.equal(rows[1].get('id'), 9007199254740993n);
  assert.equal(rows[1].get('email'), null);
  assert.equal(rows[0].getAt(2), '10.50');
  assert.equal(rows[0].values[2], '10.50'); // wire values
  assert.ok(rows[0] instanceof Row);
  assert.equal(rows[0].raw('at'), '2024-05-01T12:00:00Z');
  assert.ok(rows[0].has('doc') && !rows[0].has('nope'));
  assert.equal(b.get(1, 'extra'), 7);
  assert.deepEqual(b.column('email'), ['a@example.com', null]);
  assert.deepEqual(b.column('id'), [1, 9007199254740993n]);
  assert.deepEqual(b.rawColumn('id'), [1, '9007199254740993']);
  assert.equal(b.columnIndex('mrr'), 2);
  assert.equal(b.columnIndex('nope'), -1);
  const o = rows[0].toObject();
  assert.equal(o.at.micros, 1714564800000000n);
  assert.deepEqual(o.blob, new Uint8Array([0, 1]));
  assert.equal(o.extra, '1.5');
  assert.deepEqual(o.doc, { k: [1] });
  assert.equal(b.toObjects().length, 2);
  // JSON form: wire values, `any` untagged; no conversion needed.
  assert.deepEqual(b.toJSON()[0], { id: 1, email: 'a@example.com', mrr: '10.50', at: '2024-05-01T12:00:00Z', blob: 'AAE=', extra: '1.5', doc: { k: [1] } });
  assert.equal(JSON.stringify(rows[1]), '{"id":"9007199254740993","email":null,"mrr":null,"at":null,"blob":null,"extra":7,"doc":null}');
  assert.deepEqual([...b].map((r) => r.index), [0, 1]);
});

test('Batch: an unknown column is an error naming the columns', () => {
  const b = new Batch(rowBatch());
  assert.throws(() => b.rows()[0].get('emial'), /no column "emial".*columns: id, email/);
  assert.throws(() => b.column('x'), /no column "x"/);
});

test('Batch: parses nothing until read, and checks the row count', () => {
  const lazy = new Batch({ columns, rowCount: 2, payload: new TextEncoder().encode('not json') });
  assert.equal(lazy.rowCount, 2); // constructing never parses
  assert.throws(() => lazy.rows(), SyntaxError);
  assert.throws(() => new Batch({ columns, rowCount: 3, payload: enc(wireRows) }).rows(), /says 3 rows but its payload has 2/);
  assert.equal(new Batch({ columns, rowCount: 0, payload: new Uint8Array() }).rows().length, 0);
});

test('encodeValue: native values to wire values per type', () => {
  assert.equal(encodeValue('integer', 5), 5);
  assert.equal(encodeValue('integer', 2n ** 60n), '1152921504606846976');
  assert.equal(encodeValue('integer', 7n), 7);
  assert.equal(encodeValue('integer', '-12'), -12);
  assert.throws(() => encodeValue('integer', 1.5), /not an integer/);
  assert.throws(() => encodeValue('integer', 2n ** 63n), /beyond 64 bits/);
  assert.equal(encodeValue('float', 1), 1);
  assert.equal(encodeValue('float', NaN), 'NaN');
  assert.equal(encodeValue('float', -Infinity), '-Infinity');
  assert.equal(encodeValue('decimal', '1.50'), '1.50');
  assert.equal(encodeValue('decimal', 3n), '3');
  assert.throws(() => encodeValue('decimal', 'abc'), /not a decimal/);
  assert.equal(encodeValue('text', 'x'), 'x');
  assert.throws(() => encodeValue('text', 5), /expected a string, got number/);
  assert.equal(encodeValue('boolean', true), true);
  assert.equal(encodeValue('bytes', new Uint8Array([0, 1])), 'AAE=');
  assert.equal(encodeValue('timestamp', new Date(Date.UTC(2024, 4, 1))), '2024-05-01T00:00:00.000Z');
  assert.equal(encodeValue('timestamp', Timestamp.fromString('2024-05-01T00:00:00.000007Z')), '2024-05-01T00:00:00.000007Z');
  assert.equal(encodeValue('timestamp', '2024-05-01T02:00:00+02:00'), '2024-05-01T00:00:00.000Z');
  assert.equal(encodeValue('date', '2024-05-01'), '2024-05-01');
  assert.equal(encodeValue('date', new Date(Date.UTC(2024, 4, 1, 23))), '2024-05-01');
  assert.deepEqual(encodeValue('json', { a: [1] }), { a: [1] });
  assert.equal(encodeValue('any', 'x'), 'x');
  assert.equal(encodeValue('any', 3), 3);
  assert.deepEqual(encodeValue('any', NaN), { float: 'NaN' });
  assert.deepEqual(encodeValue('any', 2n ** 60n), { integer: '1152921504606846976' });
  assert.deepEqual(encodeValue('any', new Uint8Array([0, 1])), { bytes: 'AAE=' });
  assert.deepEqual(encodeValue('any', { a: 1 }), { json: { a: 1 } });
  assert.deepEqual(encodeValue('any', new Date(0)), { timestamp: '1970-01-01T00:00:00.000Z' });
  assert.equal(encodeValue('text', null), null);
});

test('encodeBatch: objects or arrays, round trip through Batch', () => {
  const cols = [
    { name: 'id', type: 'integer', nullable: false },
    { name: 'name', type: 'text' },
    { name: 'price', type: 'decimal' },
    { name: 'seen', type: 'timestamp' },
    { name: 'day', type: 'date' },
    { name: 'raw', type: 'bytes' },
    { name: 'score', type: 'float' },
    { name: 'meta', type: 'json' },
    { name: 'x', type: 'any' },
    { name: 'ok', type: 'boolean' },
  ];
  const seen = Timestamp.fromString('2024-05-01T12:00:00.000001Z');
  const rows = [
    { id: 1, name: 'a', price: '9.99', seen, day: '2024-05-01', raw: new Uint8Array([255]), score: NaN, meta: { a: 1 }, x: 2n ** 62n, ok: true },
    [2, null, null, null, null, null, 0.5, null, 'y', false],
  ];
  const batch = encodeBatch(cols, rows);
  assert.equal(batch.rowCount, 2);
  assert.deepEqual(batch.columns[1], { name: 'name', valueType: 'text', nullable: true });
  assert.ok(batch.payload instanceof Uint8Array);
  const text = new TextDecoder().decode(batch.payload);
  assert.equal(text, '[[1,"a","9.99","2024-05-01T12:00:00.000001Z","2024-05-01","/w==","NaN",{"a":1},{"integer":"4611686018427387904"},true],[2,null,null,null,null,null,0.5,null,"y",false]]');
  const back = new Batch(batch).rows();
  assert.equal(back[0].get('seen').micros, seen.micros);
  assert.equal(back[0].get('x'), 2n ** 62n);
  assert.deepEqual(back[0].get('raw'), new Uint8Array([255]));
  assert.ok(Number.isNaN(back[0].get('score')));
  assert.equal(back[1].get('ok'), false);
});

test('encodeBatch: a bad value is a bad-row error naming row and column', () => {
  const cols = [{ name: 'id', type: 'integer', nullable: false }, { name: 'name', type: 'text' }];
  assert.throws(() => encodeBatch(cols, [{ id: 1, name: 'a' }, { id: 2, name: 5 }]), (e) => {
    assert.ok(e instanceof PluginError);
    assert.equal(e.payload.tag, 'bad-row');
    assert.equal(e.payload.val.rowIndex, 1);
    assert.match(e.payload.val.message, /column name \(text\): expected a string, got number/);
    return true;
  });
  assert.throws(() => encodeBatch(cols, [{ name: 'a' }]), /column id is not nullable/);
  assert.throws(() => encodeBatch([{ name: 'a', type: 'varchar' }], []), /unknown value type "varchar"/);
});

test('VALUE_TYPES lists the contract\'s value types', () => {
  assert.deepEqual([...VALUE_TYPES].sort(), ['any', 'boolean', 'bytes', 'date', 'decimal', 'float', 'integer', 'json', 'text', 'timestamp']);
});
