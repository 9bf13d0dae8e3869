// Unit tests of src/plugin.js, natively in Node with a fake host (no build, no backflow):
// `node --test test/plugin.test.mjs` (npm test runs them first). They follow your config
// (test/config.json) and your rows (test/rows.jsonl, one JSON object per line; npm test's
// conformance run sends them too): edit those, not these tests, when the plugin's fields
// change.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fakeHost, loadPlugin, useHost, writeRows } from '../lib/testing.js';

const config = JSON.parse(readFileSync(new URL('./config.json', import.meta.url), 'utf8'));
const rows = readFileSync(new URL('./rows.jsonl', import.meta.url), 'utf8')
  .split('\n')
  .filter((line) => line.trim())
  .map((line) => JSON.parse(line));
const host = fakeHost();
const { plugin, destination } = await loadPlugin(new URL('../src/plugin.js', import.meta.url), host);

test('the config of test/config.json passes check-config', () => {
  assert.deepEqual(plugin.checkConfig(JSON.stringify(config)), []);
});

test('a 2xx answer accepts every row of test/rows.jsonl', () => {
  const h = fakeHost({ http: () => ({ status: 200, body: { ok: true } }) });
  useHost(h);
  const outcomes = writeRows(destination, config, 'insert', rows);
  assert.equal(outcomes.length, rows.length);
  assert.ok(outcomes.every((o) => o.tag === 'accepted'), JSON.stringify(outcomes));
  assert.ok(h.requests.length >= 1, 'at least one request');
  // Every row reached the endpoint: each value of the first field appears in a body.
  const key = Object.keys(rows[0])[0];
  const sent = h.requests.map((r) => r.body).join('\n');
  for (const row of rows) assert.ok(sent.includes(JSON.stringify(row[key])), `row ${key}=${row[key]} was sent`);
});

test('a 503 is retryable and a 429 rate limited: nothing is lost', () => {
  for (const [status, tag] of [
    [503, 'retryable'],
    [429, 'rate-limited'],
  ]) {
    useHost(fakeHost({ http: () => ({ status, headers: { 'retry-after': '2' }, body: 'busy' }) }));
    assert.throws(
      () => writeRows(destination, config, 'insert', rows),
      (e) => e.tag === tag,
      `HTTP ${status}`,
    );
  }
});

test('a connection failure is retryable', () => {
  useHost(fakeHost({ http: () => ({ error: { tag: 'connection', val: 'refused' } }) }));
  assert.throws(
    () => writeRows(destination, config, 'insert', rows),
    (e) => e.tag === 'retryable',
  );
});
