// testing.js: unit tests of a backflow plugin natively, in Node, with a fake host (issue 41).
//
//   import { fakeHost, loadPlugin, rowBatch, writeRows } from '../lib/testing.js';
//   const host = fakeHost({ http: (req) => ({ status: 200, body: '{"ok":true}' }) });
//   const { plugin, destination } = await loadPlugin(new URL('../src/plugin.js', import.meta.url), host);
//   const outcomes = writeRows(destination, config, 'insert', [{ id: 1, email: 'a@x.com' }]);
//   assert.equal(host.requests.length, 1);
//
// `loadPlugin` imports your plugin's module with `backflow:plugin/host@0.2.0` served by the
// fake host (a Node module hook), so the same src/plugin.js the component is built from runs
// unchanged. The fake host records every request (`host.requests`: method, url, headers as an
// object with lowercase names, body as text, json() parsed) and every log line (`host.logs`),
// and answers what `http` says: a function of the request, or an array of answers used in
// turn (then 200). An answer is `{ status, headers, body }` (body a string, an object sent as
// JSON, or bytes), or `{ error: { tag: 'connection' | 'timeout' | 'denied' |
// 'invalid-request', val: 'message' } }` (the contract's http-error) for no answer.
import { register } from 'node:module';
import { encodeBatch, setHost } from './backflow.js';

const HOST_MODULE = [
  'const h = () => globalThis.__backflowTestHost;',
  'export function log(level, message) { return h().log(level, message); }',
  'export function nowMs() { return h().nowMs(); }',
  'export function httpSend(request) { return h().httpSend(request); }',
].join('\n');

const HOOKS = `
export async function resolve(specifier, context, next) {
  if (specifier.startsWith('backflow:plugin/host@')) {
    return { url: 'data:text/javascript,' + encodeURIComponent(${JSON.stringify(HOST_MODULE)}), shortCircuit: true };
  }
  return next(specifier, context);
}`;

let registered = false;

/** A fake host: records requests and logs, answers as `http` says (see the module docs). */
export function fakeHost({ http, now } = {}) {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const answers = Array.isArray(http) ? [...http] : null;
  const host = {
    requests: [],
    logs: [],
    log(level, message) {
      host.logs.push({ level, message });
    },
    nowMs() {
      return BigInt(now === undefined ? Date.now() : typeof now === 'function' ? now() : now);
    },
    httpSend(req) {
      const headers = {};
      for (const h of req.headers || []) headers[h.name.toLowerCase()] = h.value;
      const body = decoder.decode(req.body || new Uint8Array(0));
      const request = { method: req.method, url: req.url, headers, body, timeoutMs: req.timeoutMs, json: () => JSON.parse(body) };
      host.requests.push(request);
      const answer = (typeof http === 'function' ? http(request) : answers ? answers.shift() : undefined) || { status: 200, body: '' };
      if (answer.error) {
        const e = new Error(`${answer.error.tag}: ${answer.error.val}`);
        e.payload = answer.error;
        throw e;
      }
      let out = answer.body === undefined || answer.body === null ? '' : answer.body;
      if (typeof out === 'object' && !(out instanceof Uint8Array)) out = JSON.stringify(out);
      const list = Object.entries(answer.headers || {}).map(([name, value]) => ({ name, value: String(value) }));
      return { status: answer.status === undefined ? 200 : answer.status, headers: list, body: typeof out === 'string' ? encoder.encode(out) : out };
    },
  };
  return host;
}

/**
 * Imports the plugin module at `url` (a URL or an absolute path) with the host import served
 * by `host` (make one with fakeHost). Returns the module's exports (`plugin`, `destination`,
 * `source`, `qualityCheck`, `approvalPolicy`).
 */
export async function loadPlugin(url, host) {
  useHost(host);
  if (!registered) {
    register('data:text/javascript,' + encodeURIComponent(HOOKS));
    registered = true;
  }
  const href = url instanceof URL ? url.href : String(url).startsWith('/') ? new URL(`file://${url}`).href : String(url);
  return import(href);
}

/** Makes `host` the fake host of the plugins loaded (switch between tests). */
export function useHost(host) {
  globalThis.__backflowTestHost = host;
  setHost(host);
}

/** Infers a column from its values: integer, float, boolean, text, json (objects). */
function inferType(values) {
  const present = values.filter((v) => v !== null && v !== undefined);
  if (present.length === 0) return 'text';
  if (present.every((v) => typeof v === 'boolean')) return 'boolean';
  if (present.every((v) => typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v)))) return 'integer';
  if (present.every((v) => typeof v === 'number')) return 'float';
  if (present.every((v) => typeof v === 'string')) return 'text';
  return 'json';
}

/**
 * A row batch as the host passes it (JSON row encoding), from rows as plain objects. The
 * columns are the rows' fields in order of appearance, typed from their values, unless
 * `columns` (`[{ name, type }]`) says otherwise.
 */
export function rowBatch(rows, columns) {
  let cols = columns;
  if (!cols) {
    const names = [];
    for (const r of rows) for (const k of Object.keys(r)) if (!names.includes(k)) names.push(k);
    cols = names.map((name) => ({ name, type: inferType(rows.map((r) => r[name])) }));
  }
  return encodeBatch(cols, rows);
}

/**
 * Opens the destination's writer with `config` (an object or JSON text), writes `rows` with
 * `op`, finishes, and returns one outcome per row (`{ tag: 'accepted' }`, `{ tag:
 * 'rejected', val }`, `{ tag: 'retryable', val }`). A plugin error is thrown as the SDK's
 * PluginError (`.tag`, `.val`).
 */
export function writeRows(destination, config, op, rows, context = {}) {
  const text = typeof config === 'string' ? config : JSON.stringify(config);
  const ctx = { syncName: 'test', primaryKey: [Object.keys(rows[0] || { id: 0 })[0]], runId: 'test-run', ...context };
  const writer = destination.Writer.open(text, ctx);
  const batch = rowBatch(rows);
  const outcomes = writer.write(op, batch);
  writer.finish();
  // The SDK answers [] for "all accepted" (the host's shorthand): spell it out.
  return outcomes.length === 0 ? rows.map(() => ({ tag: 'accepted' })) : outcomes;
}
