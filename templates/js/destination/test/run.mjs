// npm test, after the unit tests (test/plugin.test.mjs): runs dist/plugin.wasm through
// `backflow plugin conformance` (every operation with batches of your rows, test/rows.jsonl;
// config errors, an unreachable remote),
// against a local `backflow receiver`, then checks what the receiver got.
// BACKFLOW names the backflow binary (default: `backflow` on PATH).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const backflow = process.env.BACKFLOW || 'backflow';
const wasm = 'dist/plugin.wasm';
if (!existsSync(wasm)) {
  console.error(`${wasm} is missing: run \`npm run build\` first`);
  process.exit(1);
}

/** A free port on the loopback interface. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts connections on the port (or the deadline passes). */
async function waitForPort(port, child) {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (child.exitCode !== null) throw new Error(`backflow receiver exited with code ${child.exitCode}`);
    const up = await new Promise((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => (socket.destroy(), resolve(true)));
      socket.once('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`backflow receiver did not listen on 127.0.0.1:${port}`);
}

const dir = mkdtempSync(join(tmpdir(), '{{name}}-test-'));
const out = join(dir, 'received.jsonl');
const port = await freePort();
const receiver = spawn(backflow, ['receiver', '--host', '127.0.0.1', '--port', String(port), '--out', out], { stdio: ['ignore', 'ignore', 'inherit'] });
receiver.on('error', (e) => {
  console.error(`starting ${backflow}: ${e.message} (set BACKFLOW to the backflow binary)`);
  process.exit(1);
});
let status = 1;
try {
  await waitForPort(port, receiver);
  // The config of test/config.json, pointed at this receiver.
  const config = JSON.parse(readFileSync('test/config.json', 'utf8'));
  const url = new URL(config.url);
  url.port = String(port);
  config.url = url.toString();
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, JSON.stringify(config));
  const run = spawnSync(
    backflow,
    ['plugin', 'conformance', wasm, '--config', `@${configFile}`, '--grant-network', `127.0.0.1:${port}`,
      // Nothing listens on port 9 (discard): the write must fail as retryable.
      '--offline-config', '{"url": "http://127.0.0.1:9/rows"}', '--grant-network', '127.0.0.1:9',
      // Your rows (the first field is the key), not the built-in sample.
      '--rows', 'test/rows.jsonl'],
    { stdio: 'inherit' },
  );
  status = run.status ?? 1;
  // What the receiver got: JSON bodies {"operation", "rows"} carrying the rows.
  const requests = existsSync(out) ? readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  const rows = requests.flatMap((r) => (r.body && Array.isArray(r.body.rows) ? r.body.rows : []));
  const operations = [...new Set(requests.map((r) => r.body && r.body.operation))].sort();
  const problems = [];
  if (requests.length === 0) problems.push('the receiver got no request');
  const key = Object.keys(JSON.parse(readFileSync('test/rows.jsonl', 'utf8').split('\n')[0]))[0];
  if (!rows.every((r) => r && typeof r === 'object' && key in r)) problems.push(`a row without its ${key}`);
  if (operations.join(',') !== 'delete,insert,update') problems.push(`operations received: ${operations.join(', ')}`);
  if (!requests.every((r) => r.headers && r.headers['x-source'] === config.headers['X-Source'])) problems.push('a request without the configured header');
  if (problems.length) {
    console.error(`receiver check FAILED: ${problems.join('; ')}`);
    status = 1;
  } else {
    console.log(`receiver: ${requests.length} requests, ${rows.length} rows (${operations.join(', ')})`);
  }
} finally {
  receiver.kill();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(status);
