// WASM/native preprocessing parity: runs the wasm `preprocess` (Node build of
// cxr-wasm, target/wasm-node) on every file and compares its bytes with the
// native outputs written by `examples/native_preprocess.rs`, byte for byte.
//
//   node parity.mjs --wasm target/wasm-node --spec SPEC_JSON --native DIR FILE...
//   node parity.mjs --wasm target/wasm-node --spec SPEC_JSON --bench N FILE
//
// Exit status 1 on any mismatch. Native outputs: DIR/<parent>__<name>.u8 (pixels)
// or .err (error message: the wasm build must fail too, with the same message).

import { createRequire } from 'node:module';
import { readFileSync, existsSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { createHash } from 'node:crypto';

const args = process.argv.slice(2);
const opt = { files: [] };
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--wasm') opt.wasm = args[++i];
  else if (a === '--spec') opt.spec = args[++i];
  else if (a === '--native') opt.native = args[++i];
  else if (a === '--bench') opt.bench = Number(args[++i]);
  else if (a === '--label') opt.label = args[++i];
  else opt.files.push(a);
}
if (!opt.wasm || !opt.spec) {
  console.error('usage: parity.mjs --wasm DIR --spec JSON (--native DIR | --bench N) FILE...');
  process.exit(2);
}
const require = createRequire(import.meta.url);
const wasm = require(resolve(opt.wasm, 'cxr_wasm.js'));

if (opt.bench) {
  for (const f of opt.files) {
    const bytes = readFileSync(f);
    const ms = [];
    for (let i = 0; i < opt.bench; i++) {
      const t = process.hrtime.bigint();
      wasm.preprocess(bytes, opt.spec);
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    ms.sort((x, y) => x - y);
    console.log(`${f}\t${ms[ms.length >> 1].toFixed(2)}`);
  }
  process.exit(0);
}

const sha = (b) => createHash('sha256').update(b).digest('hex').slice(0, 16);
const outName = (f) => `${basename(dirname(f))}__${basename(f)}`;
let passed = 0;
const failures = [];
for (const f of opt.files) {
  const bytes = readFileSync(f);
  const base = join(opt.native, outName(f));
  let got, gotErr;
  try { got = wasm.preprocess(bytes, opt.spec); } catch (e) { gotErr = e.message; }
  if (existsSync(`${base}.err`)) {
    const want = readFileSync(`${base}.err`, 'utf8');
    if (gotErr === want) passed++;
    else failures.push(`${f}: native failed with "${want}", wasm ${gotErr ? `failed with "${gotErr}"` : 'succeeded'}`);
    continue;
  }
  if (!existsSync(`${base}.u8`)) { failures.push(`${f}: no native output`); continue; }
  const want = readFileSync(`${base}.u8`);
  if (gotErr !== undefined) { failures.push(`${f}: wasm failed: ${gotErr}`); continue; }
  if (got.length !== want.length) { failures.push(`${f}: length ${got.length} != native ${want.length}`); continue; }
  let diff = 0, maxAbs = 0, first = -1;
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      diff++;
      maxAbs = Math.max(maxAbs, Math.abs(got[i] - want[i]));
      if (first < 0) first = i;
    }
  }
  if (diff === 0) passed++;
  else failures.push(`${f}: ${diff}/${want.length} bytes differ (max |diff| ${maxAbs}, first at ${first}); wasm ${sha(got)} native ${sha(want)}`);
}
for (const m of failures) console.log(`FAIL ${m}`);
console.log(`${opt.label ? `[${opt.label}] ` : ''}${passed} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
