// npm test: runs dist/plugin.wasm through `backflow plugin conformance` with test/config.json.
// BACKFLOW names the backflow binary (default: `backflow` on PATH).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

const backflow = process.env.BACKFLOW || 'backflow';
const wasm = 'dist/plugin.wasm';
if (!existsSync(wasm)) {
  console.error(`${wasm} is missing: run \`npm run build\` first`);
  process.exit(1);
}
const run = spawnSync(backflow, ['plugin', 'conformance', wasm, '--config', '@test/config.json'], { stdio: 'inherit' });
if (run.error) console.error(`running ${backflow}: ${run.error.message} (set BACKFLOW to the backflow binary)`);
process.exit(run.status ?? 1);
