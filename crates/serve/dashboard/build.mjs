// Bundles the dashboard into one directory that `ais-serve`'s build script embeds:
//   OUTDIR/index.html, OUTDIR/assets/app-HASH.js, OUTDIR/assets/app-HASH.css
// Usage: node build.mjs --outdir DIR
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const flag = process.argv.indexOf('--outdir');
const outdir = flag > 0 ? process.argv[flag + 1] : join(here, 'dist');
if (!outdir) {
  console.error('build.mjs: --outdir needs a directory');
  process.exit(2);
}

await rm(outdir, { recursive: true, force: true });
await mkdir(join(outdir, 'assets'), { recursive: true });

const result = await esbuild.build({
  entryPoints: { app: join(here, 'src', 'main.js') },
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020'],
  outdir: join(outdir, 'assets'),
  entryNames: '[name]-[hash]',
  metafile: true,
  legalComments: 'eof',
  logLevel: 'warning',
});

let script = null;
let style = null;
for (const output of Object.keys(result.metafile.outputs)) {
  const name = basename(output);
  if (name.endsWith('.js')) script = name;
  if (name.endsWith('.css')) style = name;
}
if (!script || !style) {
  console.error('build.mjs: esbuild produced no script or no stylesheet');
  process.exit(1);
}

const template = await readFile(join(here, 'src', 'index.html'), 'utf8');
const page = template
  .replace('%SCRIPT%', `assets/${script}`)
  .replace('%STYLE%', `assets/${style}`);
await writeFile(join(outdir, 'index.html'), page);
console.log(`dashboard built into ${outdir}: ${script}, ${style}`);
