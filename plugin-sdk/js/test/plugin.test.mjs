// Errors, outcomes, config parsing and the define* wrappers: what jco's bindings receive.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as sdk from '../backflow.js';

const {
  PluginError, retryable, rateLimited, badConfig, badRow, fatal, outcome, toPluginError, parseConfig, configSchema,
  defineDestination, defineSource, defineQualityCheck, defineApprovalPolicy, definePlugin, Batch, pass, fail, warn,
  approve, reject, requireApprovals, setHost, httpSend, errorForStatus, HttpResponse, log, encodeBatch, jsonStringify,
} = sdk;

// What the bindings componentize-js 0.23 generates do with a value thrown from an export that
// returns result<_, plugin-error> (copied from its generated bindings): the thrown value's own
// `payload`, else the value itself; an Error without `payload` is rethrown, which traps.
function jcoResult(fn) {
  let ret;
  try {
    const r = fn();
    ret = r !== null && typeof r === 'object' && (r.tag === 'ok' || r.tag === 'err') ? r : { tag: 'ok', val: r };
  } catch (e) {
    if (e && Object.prototype.hasOwnProperty.call(e, 'payload')) ret = { tag: 'err', val: e.payload };
    else if (e instanceof Error) throw new Error(`TRAP: ${e.message}`);
    else ret = { tag: 'err', val: e };
  }
  return ret;
}

const enc = (v) => new TextEncoder().encode(JSON.stringify(v));
const cols = [{ name: 'id', valueType: 'integer', nullable: false }, { name: 'email', valueType: 'text', nullable: true }];
const wireBatch = (rows) => ({ columns: cols, rowCount: rows.length, payload: enc(rows) });

test('plugin errors have the WIT variant shapes, as payload and as themselves', () => {
  assert.deepEqual(retryable('x').payload, { tag: 'retryable', val: 'x' });
  assert.deepEqual(fatal('boom').payload, { tag: 'fatal', val: 'boom' });
  assert.deepEqual(rateLimited('slow', 1500).payload, { tag: 'rate-limited', val: { message: 'slow', retryAfterMs: 1500n } });
  assert.deepEqual(rateLimited('slow').payload, { tag: 'rate-limited', val: { message: 'slow', retryAfterMs: undefined } });
  assert.deepEqual(badConfig('headers.X', 'bad').payload, { tag: 'bad-config', val: { field: 'headers.X', message: 'bad' } });
  assert.deepEqual(badRow(3, 'k1', 'no').payload, { tag: 'bad-row', val: { rowIndex: 3, key: 'k1', message: 'no' } });
  assert.deepEqual(badRow(3, null, 'no').payload, { tag: 'bad-row', val: { rowIndex: 3, key: undefined, message: 'no' } });
  const e = retryable('x');
  assert.ok(e instanceof Error && e instanceof PluginError);
  assert.equal(e.tag, 'retryable');
  assert.equal(e.val, 'x');
  assert.ok(Object.prototype.hasOwnProperty.call(e, 'payload'));
  assert.equal(e.message, 'retryable: x');
});

test('row outcomes have the WIT variant shapes', () => {
  assert.deepEqual(outcome.accepted, { tag: 'accepted' });
  assert.deepEqual(outcome.rejected('no'), { tag: 'rejected', val: 'no' });
  assert.deepEqual(outcome.retryable('later'), { tag: 'retryable', val: 'later' });
  assert.deepEqual(outcome.acceptAll(2), [{ tag: 'accepted' }, { tag: 'accepted' }]);
  assert.deepEqual(outcome.rejectAll({ rowCount: 2 }, 'm'), [{ tag: 'rejected', val: 'm' }, { tag: 'rejected', val: 'm' }]);
  assert.deepEqual(outcome.retryAll([1], 'm'), [{ tag: 'retryable', val: 'm' }]);
});

test('toPluginError: anything thrown becomes a plugin-error value', () => {
  assert.deepEqual(toPluginError(new TypeError('bad thing')), { tag: 'fatal', val: 'TypeError: bad thing' });
  assert.deepEqual(toPluginError('plain'), { tag: 'fatal', val: 'plain' });
  assert.deepEqual(toPluginError({ tag: 'retryable', val: 'r' }), { tag: 'retryable', val: 'r' });
  assert.deepEqual(toPluginError(badConfig('url', 'm')), { tag: 'bad-config', val: { field: 'url', message: 'm' } });
  // A host import's error as componentize-js throws it (ComponentError with payload).
  const ce = Object.assign(new Error('connection'), { payload: { tag: 'connection', val: 'refused' } });
  assert.deepEqual(toPluginError(ce), { tag: 'retryable', val: 'connection failed: refused' });
  assert.deepEqual(toPluginError({ tag: 'rate-limited', val: { message: 'm', retryAfterMs: 2 } }), { tag: 'rate-limited', val: { message: 'm', retryAfterMs: 2n } });
  assert.equal(toPluginError(undefined).tag, 'fatal');
  assert.equal(toPluginError(null).tag, 'fatal');
});

test('parseConfig: defaults, types, required and dotted fields', () => {
  const fields = {
    url: { type: 'string', required: true, pattern: /^https?:\/\//, patternMessage: 'must be an http:// or https:// URL' },
    headers: { type: 'object', values: { type: 'string' } },
    limit: { type: 'number', default: 0, min: 0, max: 100 },
    mode: { type: 'string', enum: ['a', 'b'], default: 'a' },
    columns: { type: 'array', items: { type: 'object', fields: { name: { type: 'string', required: true }, type: { type: 'string', enum: ['text', 'integer'] } } } },
  };
  const ok = parseConfig('{"url": "http://x", "headers": {"A": "1"}}', fields);
  assert.deepEqual(ok.errors, []);
  assert.deepEqual(ok.config, { url: 'http://x', headers: { A: '1' }, limit: 0, mode: 'a' });
  const bad = parseConfig(JSON.stringify({ url: 'ftp://x', headers: { A: 1, B: 'b' }, limit: 200, mode: 'c', columns: [{ name: 'a', type: 'blob' }, { type: 'text' }], extra: 1 }), fields);
  assert.deepEqual(bad.errors.map((e) => e.field), ['url', 'headers.A', 'limit', 'mode', 'columns[0].type', 'columns[1].name', 'extra']);
  assert.match(bad.errors[0].message, /http:\/\/ or https:\/\//);
  assert.match(bad.errors[1].message, /expected a string, got number 1/);
  assert.match(bad.errors[6].message, /unknown field/);
  assert.deepEqual(parseConfig('{}', fields).errors, [{ field: 'url', message: 'is required' }]);
  assert.deepEqual(parseConfig('{nope', fields).errors.map((e) => e.field), ['']);
  assert.match(parseConfig('[1]', fields).errors[0].message, /expected a table, got an array/);
  assert.deepEqual(parseConfig('{"x": 1}', fields, { allowUnknown: true }).errors.map((e) => e.field), ['url']);
  assert.deepEqual(parseConfig('', undefined), { config: {}, errors: [] });
  // `check` adds custom problems, at the field or elsewhere.
  const custom = parseConfig('{"n": 3}', { n: { type: 'integer', check: (v) => (v % 2 ? 'must be even' : undefined) } });
  assert.deepEqual(custom.errors, [{ field: 'n', message: 'must be even' }]);
});

test('configSchema: JSON Schema from the same description', () => {
  const schema = JSON.parse(configSchema({ url: { type: 'string', required: true, description: 'Where' }, n: { type: 'number', default: 2, min: 0 }, h: { type: 'object', values: { type: 'string' } } }, { title: 't' }));
  assert.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema');
  assert.equal(schema.title, 't');
  assert.deepEqual(schema.required, ['url']);
  assert.equal(schema.additionalProperties, false);
  assert.deepEqual(schema.properties.n, { type: 'number', default: 2, minimum: 0 });
  assert.deepEqual(schema.properties.h, { type: 'object', additionalProperties: { type: 'string' } });
});

function destination(overrides) {
  return defineDestination({
    spec: { name: 'd', version: '1.2.3', description: 'desc', operations: ['insert'], maxBatchSize: 10 },
    config: { url: { type: 'string', required: true } },
    open: () => ({ write: (_op, batch) => outcome.acceptAll(batch) }),
    ...overrides,
  });
}

test('spec: every field, row encoding json', () => {
  const { plugin } = destination({ spec: { name: 'd', version: '1.2.3', description: 'desc', operations: ['insert', 'delete'], maxBatchSize: 10, defaultRateLimit: { requestsPerSecond: 5 } } });
  const s = plugin.spec();
  assert.equal(s.rowEncoding, 'json');
  assert.equal(s.kind, 'destination');
  assert.deepEqual(s.operations, ['insert', 'delete']);
  assert.equal(s.maxBatchSize, 10);
  assert.deepEqual(s.defaultRateLimit, { requestsPerSecond: 5, rowsPerSecond: undefined });
  assert.equal(JSON.parse(s.configSchema).required[0], 'url');
  assert.throws(() => destination({ spec: { name: 'd', operations: ['upsert'] } }), /unknown operation "upsert"/);
  assert.throws(() => destination({ spec: {} }), /spec.name/);
});

test('checkConfig: problems by field; an exception becomes a problem with field ""', () => {
  const { plugin } = destination({ validate: (c) => (c.url.startsWith('http') ? [] : [{ field: 'url', message: 'not http' }]) });
  assert.deepEqual(plugin.checkConfig('{"url": "http://a"}'), []);
  assert.deepEqual(plugin.checkConfig('{"url": "ftp://a"}'), [{ field: 'url', message: 'not http' }]);
  assert.deepEqual(plugin.checkConfig('{}'), [{ field: 'url', message: 'is required' }]); // validate threw: not reported
  // validate also runs when fields have problems, on the fields that passed.
  const both = destination({ config: { url: { type: 'string', required: true }, n: { type: 'number' } }, validate: (c) => (c.url.startsWith('http') ? [] : [{ field: 'url', message: 'not http' }]) });
  assert.deepEqual(both.plugin.checkConfig('{"url": "ftp://a", "n": "x"}').map((e) => e.field), ['n', 'url']);
  const throwing = destination({
    validate: () => {
      throw new Error('oops');
    },
  });
  assert.deepEqual(throwing.plugin.checkConfig('{"url": "x"}'), [{ field: '', message: 'checking the config failed: oops' }]);
  const throwsBadConfig = destination({
    validate: () => {
      throw badConfig('url', 'unreachable');
    },
  });
  assert.deepEqual(throwsBadConfig.plugin.checkConfig('{"url": "x"}'), [{ field: 'url', message: 'unreachable' }]);
});

test('writer: open with a bad config is err(bad-config), never a trap', () => {
  const { destination: d } = destination();
  const r = jcoResult(() => d.Writer.open('{"headers": 1}', { syncName: 's', primaryKey: ['id'], runId: 'r' }));
  assert.equal(r.tag, 'err');
  assert.equal(r.val.tag, 'bad-config');
  assert.equal(r.val.val.field, 'url');
  assert.match(r.val.val.message, /is required \(and 1 more problem\)/);
  const ok = jcoResult(() => d.Writer.open('{"url": "u"}', { syncName: 's', primaryKey: [], runId: 'r' }));
  assert.equal(ok.tag, 'ok');
  assert.ok(ok.val instanceof d.Writer);
});

test('writer: write gets a Batch; exceptions become plugin errors', () => {
  const seen = [];
  const { destination: d } = destination({
    open: (config, context) => ({
      write(op, batch) {
        assert.ok(batch instanceof Batch);
        seen.push([config.url, context.syncName, op, batch.rows().map((r) => r.get('email'))]);
        if (batch.rowCount === 3) throw new RangeError('three is too many');
        if (batch.rowCount === 4) throw retryable('try later');
        if (batch.rowCount === 5) throw { tag: 'fatal', val: 'plain object' };
        if (batch.rowCount === 6) return [outcome.accepted];
        if (batch.rowCount === 7) return 'nope';
        const out = outcome.acceptAll(batch);
        out[0] = outcome.rejected('first is bad');
        return out;
      },
    }),
  });
  const w = d.Writer.open('{"url": "u"}', { syncName: 's', primaryKey: ['id'], runId: 'r' });
  const ok = jcoResult(() => w.write('insert', wireBatch([[1, 'a'], [2, null]])));
  assert.deepEqual(ok, { tag: 'ok', val: [{ tag: 'rejected', val: 'first is bad' }, { tag: 'accepted' }] });
  assert.deepEqual(seen[0], ['u', 's', 'insert', ['a', null]]);
  const rows = (n) => wireBatch(Array.from({ length: n }, (_, i) => [i, 'x']));
  assert.deepEqual(jcoResult(() => w.write('insert', rows(3))), { tag: 'err', val: { tag: 'fatal', val: 'RangeError: three is too many' } });
  assert.deepEqual(jcoResult(() => w.write('insert', rows(4))), { tag: 'err', val: { tag: 'retryable', val: 'try later' } });
  assert.deepEqual(jcoResult(() => w.write('insert', rows(5))), { tag: 'err', val: { tag: 'fatal', val: 'plain object' } });
  assert.deepEqual(jcoResult(() => w.write('insert', rows(6))), { tag: 'err', val: { tag: 'fatal', val: 'write returned 1 outcomes for 6 rows' } });
  assert.equal(jcoResult(() => w.write('insert', rows(7))).val.tag, 'fatal');
  assert.deepEqual(jcoResult(() => w.finish()), { tag: 'ok', val: undefined });
});

test('writer: every row accepted is answered with the empty list (contract 0.2.0), however it was written', () => {
  const answers = {
    1: (batch) => outcome.acceptAll(batch),
    2: () => [outcome.accepted, { tag: 'accepted' }],
    3: () => [outcome.accepted, { tag: 'rejected', val: 42 }, outcome.accepted],
    4: () => [outcome.accepted, undefined, , outcome.accepted],
    5: () => new Array(5),
  };
  const { destination: d } = destination({ open: () => ({ write: (_op, batch) => answers[batch.rowCount](batch) }) });
  const w = d.Writer.open('{"url": "u"}', { syncName: 's', primaryKey: ['id'], runId: 'r' });
  const rows = (n) => wireBatch(Array.from({ length: n }, (_, i) => [i, 'x']));
  assert.deepEqual(jcoResult(() => w.write('insert', rows(1))), { tag: 'ok', val: [] });
  assert.deepEqual(jcoResult(() => w.write('insert', rows(2))), { tag: 'ok', val: [] });
  assert.deepEqual(jcoResult(() => w.write('insert', rows(3))), {
    tag: 'ok',
    val: [{ tag: 'accepted' }, { tag: 'rejected', val: '42' }, { tag: 'accepted' }],
  });
  assert.deepEqual(jcoResult(() => w.write('insert', rows(4))), { tag: 'err', val: { tag: 'fatal', val: 'write: outcome 1 is not a row outcome: undefined' } });
  assert.equal(jcoResult(() => w.write('insert', rows(5))).val.tag, 'fatal');
});

test('writer: async write and finish work, rejections become plugin errors', async () => {
  const { destination: d } = destination({
    open: async () => ({
      write: async (_op, batch) => outcome.acceptAll(batch),
      finish: async () => {
        throw rateLimited('slow down', 1000);
      },
    }),
  });
  const w = await d.Writer.open('{"url": "u"}', { syncName: 's', primaryKey: [], runId: 'r' });
  assert.ok(w instanceof d.Writer);
  assert.deepEqual(await w.write('update', wireBatch([[1, 'a']])), [], 'every row accepted: the empty list of contract 0.2.0');
  await assert.rejects(w.finish(), (e) => {
    assert.deepEqual(e.payload, { tag: 'rate-limited', val: { message: 'slow down', retryAfterMs: 1000n } });
    return true;
  });
});

test('source: rows become batches; null or [] ends; columns come from open', () => {
  const { plugin, source } = defineSource({
    spec: { name: 's' },
    open(_config, query) {
      let sent = 0;
      const all = [{ id: 1, email: 'a' }, { id: 2, email: null }, { id: 3, email: 'c' }];
      return {
        columns: [{ name: 'id', type: 'integer', nullable: false }, { name: 'email', type: 'text' }],
        nextBatch(maxRows) {
          if (query === 'bad') return [{ id: 'x' }];
          const rows = all.slice(sent, sent + maxRows);
          sent += rows.length;
          return rows;
        },
      };
    },
  });
  assert.equal(plugin.spec().kind, 'source');
  const r = source.Reader.open('{}', 'q');
  assert.deepEqual(r.columns(), [{ name: 'id', valueType: 'integer', nullable: false }, { name: 'email', valueType: 'text', nullable: true }]);
  const b1 = jcoResult(() => r.nextBatch(2));
  assert.equal(b1.tag, 'ok');
  assert.equal(b1.val.rowCount, 2);
  assert.equal(new TextDecoder().decode(b1.val.payload), '[[1,"a"],[2,null]]');
  assert.equal(jcoResult(() => r.nextBatch(2)).val.rowCount, 1);
  assert.deepEqual(jcoResult(() => r.nextBatch(2)), { tag: 'ok', val: undefined });
  assert.deepEqual(jcoResult(() => r.nextBatch(2)), { tag: 'ok', val: undefined });
  const bad = source.Reader.open('{}', 'bad');
  const err = jcoResult(() => bad.nextBatch(10));
  assert.equal(err.val.tag, 'bad-row');
  assert.equal(err.val.val.rowIndex, 0);
  const thrower = defineSource({
    spec: { name: 's' },
    open: () => {
      throw new Error('cannot open');
    },
  });
  assert.deepEqual(jcoResult(() => thrower.source.Reader.open('{}', 'q')), { tag: 'err', val: { tag: 'fatal', val: 'cannot open' } });
  const badCols = defineSource({ spec: { name: 's' }, open: () => ({ columns: [{ name: 'a', type: 'nope' }], nextBatch: () => null }) });
  assert.match(jcoResult(() => badCols.source.Reader.open('{}', 'q')).val.val, /unknown value type "nope"/);
});

test('quality check: plan counts are numbers, samples are JSON strings', () => {
  const { plugin, qualityCheck } = defineQualityCheck({
    spec: { name: 'c' },
    open(_config, plan) {
      assert.equal(plan.added, 2);
      const bad = [];
      return {
        observe(kind, after, before) {
          assert.equal(before, null);
          for (const row of after.rows()) if (row.get('email') === null) bad.push(row);
        },
        finish: () => (bad.length ? fail(`${bad.length} null`, bad) : pass('ok')),
      };
    },
  });
  assert.equal(plugin.spec().kind, 'quality-check');
  assert.equal(plugin.spec().operations.length, 0);
  const c = qualityCheck.Checker.open('{}', { syncName: 's', columns: cols, snapshotRows: 0n, modelRows: 2n, added: 2n, changed: 0n, removed: 0n });
  assert.deepEqual(jcoResult(() => c.observe('added', wireBatch([[1, 'a'], [2, null]]), undefined)), { tag: 'ok', val: undefined });
  assert.deepEqual(c.finish(), { verdict: 'fail', message: '1 null', samples: ['{"id":2,"email":null}'] });
  assert.deepEqual(warn('w', [{ a: 1n }]), { verdict: 'warn', message: 'w', samples: ['{"a":1}'] });
  const broken = defineQualityCheck({ spec: { name: 'c' }, open: () => ({ finish: () => 'yes' }) });
  const b = broken.qualityCheck.Checker.open('{}', { syncName: 's', columns: [], snapshotRows: 0n, modelRows: 0n, added: 0n, changed: 0n, removed: 0n });
  assert.equal(jcoResult(() => b.finish()).val.tag, 'fatal');
});

test('approval policy: decisions have the WIT variant shapes', () => {
  assert.deepEqual(approve('fine'), { tag: 'approve', val: 'fine' });
  assert.deepEqual(reject('no'), { tag: 'reject', val: 'no' });
  assert.deepEqual(requireApprovals(1, ['approver', 'admin'], { reason: 'big' }), { tag: 'require', val: { count: 1, roles: ['approver', 'admin'], allowSelfApproval: false, reason: 'big' } });
  const { plugin, approvalPolicy } = definePlugin({
    kind: 'approval-policy',
    spec: { name: 'p' },
    config: { max: { type: 'number', default: 10 } },
    evaluate(config, request) {
      const removed = request.syncs.reduce((n, s) => n + s.removed, 0);
      if (request.author === 'boom') throw new Error('kaput');
      return removed > config.max ? requireApprovals(1, ['admin'], { reason: `${removed} removed` }) : approve('small');
    },
  });
  assert.equal(plugin.spec().kind, 'approval-policy');
  const req = (author, removed) => ({ kind: 'run', author, authorRole: 'contributor', description: '', syncs: [{ syncName: 's', destination: 'd', mode: 'mirror', added: 0n, changed: 0n, removed, columnLabels: [] }] });
  assert.deepEqual(approvalPolicy.evaluate('{}', req('a', 3n)), { tag: 'approve', val: 'small' });
  assert.equal(approvalPolicy.evaluate('{"max": 1}', req('a', 3n)).tag, 'require');
  assert.deepEqual(jcoResult(() => approvalPolicy.evaluate('{}', req('boom', 0n))), { tag: 'err', val: { tag: 'fatal', val: 'kaput' } });
  assert.equal(jcoResult(() => approvalPolicy.evaluate('{"max": "x"}', req('a', 0n))).val.tag, 'bad-config');
});

test('httpSend through the host: responses, errors by kind, status helpers', () => {
  const requests = [];
  let answer;
  setHost({
    log() {},
    nowMs: () => 1000n,
    httpSend(req) {
      requests.push(req);
      if (answer instanceof Error) throw answer;
      return answer;
    },
  });
  try {
    answer = { status: 429, headers: [{ name: 'Retry-After', value: '3' }], body: new TextEncoder().encode('slow') };
    const res = httpSend({ method: 'post', url: 'http://h/x', headers: { A: 'b' }, json: { n: 1n } });
    assert.ok(res instanceof HttpResponse);
    assert.equal(res.header('retry-after'), '3');
    assert.equal(res.text(), 'slow');
    assert.deepEqual(requests[0].headers, [{ name: 'A', value: 'b' }, { name: 'content-type', value: 'application/json' }]);
    assert.equal(requests[0].method, 'POST');
    assert.equal(new TextDecoder().decode(requests[0].body), '{"n":1}');
    assert.equal(requests[0].timeoutMs, undefined);
    assert.deepEqual(errorForStatus(res).payload, { tag: 'rate-limited', val: { message: 'HTTP 429 slow', retryAfterMs: 3000n } });
    assert.equal(errorForStatus({ status: 503, text: () => 'down', header: () => null }).payload.tag, 'retryable');
    assert.equal(errorForStatus({ status: 404, text: () => '', header: () => null }), null);
    answer = Object.assign(new Error('timeout'), { payload: { tag: 'timeout', val: 'after 30 s' } });
    assert.throws(() => httpSend({ url: 'http://h/' }), (e) => {
      assert.deepEqual(e.payload, { tag: 'retryable', val: 'GET http://h/: timed out: after 30 s' });
      assert.deepEqual(e.httpError, { tag: 'timeout', val: 'after 30 s' });
      return true;
    });
    answer = Object.assign(new Error('denied'), { payload: { tag: 'denied', val: 'h:80 is not granted' } });
    assert.throws(() => httpSend({ url: 'http://h/' }), (e) => e.payload.tag === 'fatal' && /grants.network/.test(e.payload.val));
  } finally {
    setHost(null);
  }
  assert.throws(() => httpSend({ url: 'http://h/' }), /no host/);
});

test('log goes to the host with the level', () => {
  const lines = [];
  setHost({ log: (level, message) => lines.push([level, message]) });
  try {
    log.info('hello', { a: 1 }, 2n);
    log.error(new TypeError('bad'));
  } finally {
    setHost(null);
  }
  assert.deepEqual(lines, [['info', 'hello {"a":1} 2'], ['error', 'TypeError: bad']]);
});

test('jsonStringify writes BigInt and bytes', () => {
  assert.equal(jsonStringify({ a: 2n, b: 2n ** 60n, c: new Uint8Array([0, 1]) }), '{"a":2,"b":"1152921504606846976","c":"AAE="}');
});

test('encodeBatch output is what a source returns (row-batch record)', () => {
  const b = encodeBatch([{ name: 'a', type: 'text' }], [['x']]);
  assert.deepEqual(Object.keys(b).sort(), ['columns', 'payload', 'rowCount']);
});
