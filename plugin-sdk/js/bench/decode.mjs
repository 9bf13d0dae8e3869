// A sanity figure, natively (Node's JIT; inside a component the SDK runs interpreted and is
// several times slower): rows per second through the SDK's decoding of 500-row batches of the
// boundary benchmark's table. `node plugin-sdk/js/bench/decode.mjs [rows]`
import { Batch, encodeBatch } from '../backflow.js';

const columns = [
  { name: 'id', valueType: 'integer', nullable: false },
  { name: 'email', valueType: 'text', nullable: true },
  { name: 'name', valueType: 'text', nullable: true },
  { name: 'plan', valueType: 'text', nullable: true },
  { name: 'mrr', valueType: 'decimal', nullable: true },
  { name: 'country', valueType: 'text', nullable: true },
  { name: 'updated_at', valueType: 'timestamp', nullable: true },
];
const ROWS = 500;
function batch(first) {
  const rows = [];
  for (let g = first; g < first + ROWS; g++) {
    const at = new Date(Date.UTC(2024, 0, 1) + g * 1000).toISOString().replace('.000Z', 'Z');
    rows.push([g, `user${g}@example.com`, `User ${g}`, ['free', 'pro', 'enterprise'][g % 3], `${g % 2000}.${String(g % 100).padStart(2, '0')}`, ['DE', 'FR', 'US', 'JP', 'BR'][g % 5], at]);
  }
  return { columns, rowCount: ROWS, payload: new TextEncoder().encode(JSON.stringify(rows)) };
}
const total = Number(process.argv[2] || 500000);
const input = Array.from({ length: 20 }, (_, i) => batch(i * ROWS));
let sink = 0;
const cases = {
  'parse only': (b) => (sink += new Batch(b).raw.length),
  'rows() + get(email)': (b) => {
    for (const row of new Batch(b).rows()) sink += row.get('email').length;
  },
  'column(email)': (b) => {
    for (const v of new Batch(b).column('email')) sink += v.length;
  },
  'rows() + get(updated_at) (Timestamp)': (b) => {
    for (const row of new Batch(b).rows()) sink += row.get('updated_at').microsecond;
  },
  'toObject() every row': (b) => (sink += new Batch(b).toObjects().length),
  'toJSON() + JSON.stringify': (b) => (sink += JSON.stringify(new Batch(b).toJSON()).length),
};
for (const [name, fn] of Object.entries(cases)) {
  for (let i = 0; i < 40; i++) fn(input[i % input.length]); // warm up
  const started = process.hrtime.bigint();
  for (let done = 0, i = 0; done < total; done += ROWS, i++) fn(input[i % input.length]);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`${name.padEnd(40)} ${Math.round(total / seconds).toLocaleString('en-US').padStart(12)} rows/s`);
}
const objects = input[0].payload && new Batch(input[0]).toObjects();
const started = process.hrtime.bigint();
for (let done = 0; done < total; done += ROWS) sink += encodeBatch(columns, objects).rowCount;
console.log(`${'encodeBatch (source side)'.padEnd(40)} ${Math.round(total / (Number(process.hrtime.bigint() - started) / 1e9)).toLocaleString('en-US').padStart(12)} rows/s`);
if (sink === 42) console.log('');
