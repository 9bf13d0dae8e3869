// npm test: serves test/rows.json from a local HTTP server (standing in for the API) and runs
// dist/plugin.wasm through `backflow plugin conformance`, reading the query /rows.json with
// test/config.json pointed at that server.
// BACKFLOW names the backflow binary (default: `backflow` on PATH).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const backflow = process.env.BACKFLOW || 'backflow';
const wasm = 'dist/plugin.wasm';
if (!existsSync(wasm)) {
  console.error(`${wasm} is missing: run \`npm run build\` first`);
  process.exit(1);
}

const rows = readFileSync('test/rows.json');
const server = createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/rows.json') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(rows);
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());

const config = JSON.parse(readFileSync('test/config.json', 'utf8'));
const url = new URL(config.url);
url.port = String(port);
config.url = url.origin;
// Asynchronous: this process keeps serving while backflow reads.
const child = spawn(backflow, ['plugin', 'conformance', wasm, '--query', '/rows.json', '--config', JSON.stringify(config), '--grant-network', `127.0.0.1:${port}`], { stdio: 'inherit' });
child.on('error', (e) => {
  console.error(`running ${backflow}: ${e.message} (set BACKFLOW to the backflow binary)`);
  server.close();
  process.exit(1);
});
child.on('exit', (code) => {
  server.close();
  process.exit(code ?? 1);
});
