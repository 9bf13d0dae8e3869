// npm run build, step 1: bundles src/plugin.js (and lib/backflow.js) into dist/bundle.js with
// esbuild, the one file `jco componentize` (step 2) turns into dist/plugin.wasm.
//
// The bundle carries its own source map (`globalThis.__backflowSourceMap`, appended at its
// end so that no line moves): when the plugin throws, the SDK maps the stack back to your
// files (src/plugin.js:LINE:COLUMN) and logs it at the error level.
import { build } from 'esbuild';
import { readFileSync, appendFileSync, rmSync } from 'node:fs';

await build({
  entryPoints: ['src/plugin.js'],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  external: ['backflow:*'],
  outfile: 'dist/bundle.js',
  sourcemap: 'external',
  sourcesContent: false,
  logLevel: 'warning',
});
const map = JSON.parse(readFileSync('dist/bundle.js.map', 'utf8'));
const embedded = { file: 'bundle.js', sources: map.sources, mappings: map.mappings };
appendFileSync('dist/bundle.js', `\nglobalThis.__backflowSourceMap = ${JSON.stringify(embedded)};\n`);
rmSync('dist/bundle.js.map');
