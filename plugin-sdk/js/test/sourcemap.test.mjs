// Stack traces in the author's sources (issue 41): frames of the bundle are mapped back
// through the source map the templates' build embeds, and a plugin's bug is reported at the
// error level with its place in the author's code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMappings, mapStack } from '../backflow.js';

// A map as esbuild writes it for a two-line bundle: bundle line 1 col 0 -> src/plugin.js 1:0,
// line 2 col 0 -> lib/backflow.js 9:2 and col 6 -> src/plugin.js 3:2 (all 0-based).
const MAP = {
  version: 3,
  file: 'bundle.js',
  sources: ['../src/plugin.js', '../lib/backflow.js'],
  mappings: 'AAAA;ACSE,MDNA',
};

test('decodeMappings reads the VLQ segments', () => {
  assert.deepEqual(decodeMappings(MAP.mappings), [
    [[0, 0, 0, 0]],
    [
      [0, 1, 9, 2],
      [6, 0, 3, 2],
    ],
  ]);
});

test('mapStack rewrites bundle frames to the author sources (1-based)', () => {
  const stack = 'write@bundle.js:2:9\nguard@file:///x/dist/bundle.js:2:1\nother@elsewhere.js:5:5';
  assert.equal(mapStack(stack, MAP), 'write@src/plugin.js:4:3\nguard@lib/backflow.js:10:3\nother@elsewhere.js:5:5');
});

test('without a map the stack is unchanged', () => {
  assert.equal(mapStack('f@bundle.js:1:1'), 'f@bundle.js:1:1');
});
