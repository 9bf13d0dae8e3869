// Inside a component without wasi:http, calling fetch traps the instance: once a plugin is
// defined with a host, the SDK makes fetch throw a plugin error instead. (A file of its own:
// it replaces this process's fetch.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defineDestination, outcome, PluginError } from '../backflow.js';

test('fetch throws a fatal plugin error once a host is installed', () => {
  defineDestination({ host: { log() {} }, spec: { name: 'd', operations: ['insert'] }, open: () => ({ write: (_op, b) => outcome.acceptAll(b) }) });
  assert.throws(() => fetch('http://127.0.0.1:9/'), (e) => {
    assert.ok(e instanceof PluginError);
    assert.equal(e.payload.tag, 'fatal');
    assert.match(e.payload.val, /use httpSend/);
    return true;
  });
});
