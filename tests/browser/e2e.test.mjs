// Real-browser end-to-end test of the cxr web page (issue 5).
//
// Starts `cxr serve` on a free port with a temporary home and a tiny generated
// dataset, trains and activates a small model through the job API, opens the
// page in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), uploads X-rays through the file picker and checks that the
// label and probabilities the page shows (wasm preprocessing + POST
// /v1/predict/tensor) equal what POST /v1/predict (native preprocessing) gives
// for the same files; checks the message for a non-image file; saves a
// screenshot to tests/browser/artifacts/.
//
// Run with scripts/test-browser.sh (builds what it needs), or directly:
//   node --test tests/browser/e2e.test.mjs
// Environment: CXR_BIN (default target/debug/cxr), CHROMIUM (default
// /usr/bin/chromium), CXR_XRAY_DIR (real X-rays, default
// ../shared/data/chest-xray-mini/test; skipped when absent), CXR_KEEP_TMP=1,
// CXR_E2E_EPOCHS / CXR_E2E_LR (the training stage; default 3 epochs at 0.01,
// about 20 s on 2 cores, enough for the tiny model to tell the generated classes apart).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, createWriteStream, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { makeDataset, encodePng, synthetic } from './images.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const ARTIFACTS = join(HERE, 'artifacts');
const BIN = process.env.CXR_BIN || join(ROOT, 'target/debug/cxr');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const XRAY_DIR = process.env.CXR_XRAY_DIR || resolve(ROOT, '../shared/data/chest-xray-mini/test');
const TOKEN = 'browser-e2e-token';
const TOL = 1e-5;
const CLASSES = ['NORMAL', 'PNEUMONIA'];

let tmp, base, server, serverExited = null, browser, page, modelId, card;
const pageErrors = [];
const requests = [];

// ------------------------------------------------------------------ helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => res(port)); });
  });
}

async function http(method, path, { body, type, token } = {}) {
  const headers = {};
  if (type) headers['Content-Type'] = type;
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(base + path, { method, headers, body });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text };
}

function serverLog() {
  try { return readFileSync(join(ARTIFACTS, 'server.log'), 'utf8').slice(-4000); } catch { return ''; }
}

async function waitFor(what, fn, timeoutMs) {
  const t0 = Date.now();
  let last;
  while (Date.now() - t0 < timeoutMs) {
    if (serverExited) throw new Error(`cxr serve exited (${serverExited}) while waiting for ${what}\n${serverLog()}`);
    try { last = await fn(); if (last) return last; } catch (e) { if (e.fatal) throw e; last = e; }
    await sleep(250);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last?.message ?? JSON.stringify(last)})\n${serverLog()}`);
}

const mimeOf = (name) => (/\.png$/i.test(name) ? 'image/png' : /\.jpe?g$/i.test(name) ? 'image/jpeg' : 'text/plain');

/** The X-rays the page classifies: generated PNGs (gray, RGB, odd size), a JPEG encoded by the browser, real X-rays when present. */
async function testImages() {
  const files = [
    { name: 'gen-normal-gray.png', buffer: encodePng(48, 40, 1, synthetic(0, 901)) },
    { name: 'gen-pneumonia-gray.png', buffer: encodePng(48, 40, 1, synthetic(1, 902)) },
    { name: 'gen-pneumonia-rgb-61x47.png', buffer: encodePng(61, 47, 3, synthetic(1, 903, 61, 47, 3)) },
  ];
  // A baseline JPEG with chroma, encoded by Chromium itself (Node has no JPEG encoder).
  const w = 53, h = 45, px = synthetic(0, 904, w, h, 3);
  const scratch = await browser.newPage();
  const dataUrl = await scratch.evaluate(({ w, h, px }) => {
    const c = document.createElement('canvas');
    c.width = w; c.height = h;
    const ctx = c.getContext('2d');
    const img = ctx.createImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      img.data.set([px[3 * i], px[3 * i + 1], px[3 * i + 2], 255], 4 * i);
    }
    ctx.putImageData(img, 0, 0);
    return c.toDataURL('image/jpeg', 0.85);
  }, { w, h, px: [...px] });
  await scratch.close();
  assert.match(dataUrl, /^data:image\/jpeg;base64,/);
  files.push({ name: 'gen-normal-rgb-53x45.jpg', buffer: Buffer.from(dataUrl.split(',')[1], 'base64') });
  // Real chest X-rays (JPEG, various sizes), one per class, when the shared data is there.
  for (const cls of CLASSES) {
    const dir = join(XRAY_DIR, cls);
    if (!existsSync(dir)) continue;
    const pick = readdirSync(dir).filter((f) => /\.(jpe?g|png)$/i.test(f)).sort()[0];
    if (pick) files.push({ name: `real-${cls.toLowerCase()}-${pick}`, buffer: readFileSync(join(dir, pick)) });
  }
  return files.map((f) => ({ ...f, mimeType: mimeOf(f.name) }));
}

/** What the page shows for one file, once it is done (or failed). */
async function shown(name, timeoutMs = 30_000) {
  const sel = `.result[data-file="${name}"]`;
  await page.waitForSelector(`${sel}[data-state="done"], ${sel}[data-state="error"]`, { timeout: timeoutMs });
  return page.$eval(sel, (node) => ({
    state: node.dataset.state,
    label: node.querySelector('.label')?.hidden ? null : node.querySelector('.label')?.textContent,
    labelData: node.querySelector('.label')?.dataset.label ?? null,
    probs: Object.fromEntries([...node.querySelectorAll('.prob')].map((p) => [p.dataset.class, { value: p.dataset.value, text: p.textContent }])),
    error: node.querySelector('.error')?.textContent ?? null,
    upload: node.querySelector('.upload')?.textContent ?? null,
  }));
}

// ------------------------------------------------------------------ set-up

before(async () => {
  assert.ok(existsSync(BIN), `${BIN} is missing: run cargo build -p cxr-service (or scripts/test-browser.sh)`);
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install -y chromium`);
  assert.ok(existsSync(join(ROOT, 'service/web/pkg/cxr_wasm_bg.wasm')), 'service/web/pkg is missing: run scripts/build-wasm.sh');
  mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of ['page.png', 'page-at-failure.png', 'compare.txt']) rmSync(join(ARTIFACTS, f), { force: true });
  tmp = mkdtempSync(join(tmpdir(), 'cxr-browser-'));
  const datasets = join(tmp, 'datasets');
  makeDataset(join(datasets, 'tiny'), { train: 12, val: 4, test: 4 });

  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const log = createWriteStream(join(ARTIFACTS, 'server.log'));
  server = spawn(BIN, [
    'serve', '--addr', `127.0.0.1:${port}`, '--home', join(tmp, 'home'),
    '--datasets-root', datasets, '--web-dir', join(ROOT, 'service/web'), '--train-workers', '1',
  ], { env: { ...process.env, CXR_TOKEN: TOKEN, RUST_LOG: process.env.RUST_LOG || 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
  server.stdout.pipe(log);
  server.stderr.pipe(log);
  server.on('exit', (code, sig) => { serverExited = sig || `code ${code}`; });
  await waitFor('GET /healthz', async () => (await http('GET', '/healthz')).status === 200, 60_000);

  // Train a small model through the job API, then activate it.
  const job = await http('POST', '/v1/jobs', {
    type: 'application/json', token: TOKEN,
    body: JSON.stringify({ dataset: 'tiny', stages: [{ arch: 'xresnet18', size: 32, presize: 48, epochs: Number(process.env.CXR_E2E_EPOCHS || 3), bs: 8, lr: Number(process.env.CXR_E2E_LR || 0.01), seed: 42 }] }),
  });
  assert.equal(job.status, 202, `POST /v1/jobs: ${job.text}`);
  const done = await waitFor(`job ${job.json.id} to finish`, async () => {
    const j = (await http('GET', `/v1/jobs/${job.json.id}`)).json;
    if (['failed', 'cancelled', 'interrupted'].includes(j?.state)) throw Object.assign(new Error(`job ${j.state}: ${j.error}`), { fatal: true });
    return j?.state === 'succeeded' ? j : null;
  }, 300_000);
  modelId = done.model_id;
  assert.ok(modelId, `a succeeded job names its model: ${JSON.stringify(done)}`);
  const act = await http('POST', `/v1/models/${modelId}/activate`, { token: TOKEN });
  assert.equal(act.status, 200, `activate: ${act.text}`);
  const models = (await http('GET', '/v1/models')).json.models;
  card = models.find((m) => m.id === modelId)?.card;
  assert.ok(models.find((m) => m.id === modelId)?.active, 'the model is active');
  assert.equal(card?.preprocess?.size, 32, `model card preprocess: ${JSON.stringify(card)}`);

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('request', (r) => { if (r.url().startsWith(base)) requests.push({ method: r.method(), path: new URL(r.url()).pathname, body: r.postData() }); });
});

after(async () => {
  try {
    if (page && !existsSync(join(ARTIFACTS, 'page.png'))) await page.screenshot({ path: join(ARTIFACTS, 'page-at-failure.png'), fullPage: true });
  } catch { /* best effort */ }
  await browser?.close().catch(() => {});
  if (server && !serverExited) {
    server.kill('SIGTERM');
    await Promise.race([new Promise((r) => server.once('exit', r)), sleep(5000)]);
    if (!serverExited) server.kill('SIGKILL');
  }
  if (tmp && !process.env.CXR_KEEP_TMP) rmSync(tmp, { recursive: true, force: true });
});

// ------------------------------------------------------------------ tests

test('the page loads and shows the active model', async () => {
  await page.goto(base + '/', { waitUntil: 'load' });
  await page.waitForSelector('#status[data-state="ok"]', { timeout: 15_000 });
  const status = await page.$eval('#status', (s) => ({ text: s.textContent, model: s.dataset.modelId }));
  assert.equal(status.model, modelId);
  assert.match(status.text, new RegExp(modelId));
  assert.deepEqual(pageErrors, []);
});

let images = [];

test('labels and probabilities shown equal POST /v1/predict for the same files', async () => {
  images = await testImages();
  await page.setInputFiles('#file-input', images);
  const rows = [];
  const labels = new Set();
  for (const f of images) {
    const got = await shown(f.name);
    assert.equal(got.state, 'done', `${f.name}: the page failed: ${got.error}`);
    const srv = await http('POST', '/v1/predict', { type: f.mimeType, body: f.buffer });
    assert.equal(srv.status, 200, `POST /v1/predict ${f.name}: ${srv.text}`);
    assert.equal(srv.json.model_id, modelId);
    assert.equal(got.label, srv.json.label, `${f.name}: label`);
    assert.equal(got.labelData, srv.json.label, `${f.name}: data-label`);
    assert.deepEqual(Object.keys(got.probs).sort(), CLASSES);
    for (const cls of CLASSES) {
      const pageV = Number(got.probs[cls].value);
      const srvV = srv.json.probabilities[cls];
      assert.ok(Number.isFinite(pageV) && typeof srvV === 'number', `${f.name} ${cls}: ${got.probs[cls].value} vs ${srvV}`);
      assert.ok(Math.abs(pageV - srvV) <= TOL, `${f.name} ${cls}: page ${pageV} vs server ${srvV} (|diff| > ${TOL})`);
      assert.equal(got.probs[cls].text, pageV.toFixed(4), `${f.name} ${cls}: shown text`);
      assert.ok(Math.abs(Number(got.probs[cls].text) - srvV) <= 5e-5 + TOL, `${f.name} ${cls}: shown ${got.probs[cls].text} vs server ${srvV}`);
      rows.push(`${f.name.padEnd(44)} ${cls.padEnd(9)} page ${pageV.toFixed(8)}  server ${srvV.toFixed(8)}  |diff| ${Math.abs(pageV - srvV).toExponential(1)}`);
    }
    const sum = CLASSES.reduce((s, c) => s + Number(got.probs[c].value), 0);
    assert.ok(Math.abs(sum - 1) < 1e-4, `${f.name}: probabilities sum to ${sum}`);
    assert.match(got.upload ?? '', /\d/, `${f.name}: upload size shown`);
    labels.add(got.label);
    rows.push(`${f.name.padEnd(44)} label     page ${got.label}  server ${srv.json.label}`);
  }
  rows.push(`labels shown: ${[...labels].join(', ')}${labels.size < 2 ? ' (the tiny model predicts one class only; the comparison still holds)' : ''}`);
  console.log(rows.join('\n'));
  writeFileSync(join(ARTIFACTS, 'compare.txt'), rows.join('\n') + '\n');

  // The page preprocessed locally: it posted one size*size tensor per image and never the file itself.
  const tensorPosts = requests.filter((r) => r.method === 'POST' && r.path === '/v1/predict/tensor');
  assert.equal(tensorPosts.length, images.length, `tensor posts: ${JSON.stringify(requests.map((r) => r.path))}`);
  assert.equal(requests.filter((r) => r.method === 'POST' && r.path === '/v1/predict').length, 0);
  for (const r of tensorPosts) {
    const b = JSON.parse(r.body);
    assert.equal(b.size, card.preprocess.size);
    assert.equal(b.spec_version, card.preprocess.version);
    assert.equal(Buffer.from(b.pixels, 'base64').length, b.size * b.size);
  }
  assert.deepEqual(pageErrors, []);
});

test('a non-image file gets a clear error message', async () => {
  const name = 'notes.txt';
  const buffer = Buffer.from('these are my notes, not an X-ray\n');
  const before = requests.length;
  await page.setInputFiles('#file-input', [{ name, mimeType: 'text/plain', buffer }]);
  const got = await shown(name);
  assert.equal(got.state, 'error');
  assert.equal(got.label, null, 'no label for a non-image');
  assert.deepEqual(got.probs, {});
  assert.ok(got.error, 'an .error message is shown');
  assert.match(got.error, /^notes\.txt could not be preprocessed: \S/, got.error);
  assert.match(got.error, /image|format|decode/i, got.error);
  assert.equal(await page.$eval(`.result[data-file="${name}"] .error`, (e) => e.getAttribute('role')), 'alert');
  // Rejected locally: nothing was uploaded for it.
  assert.equal(requests.slice(before).filter((r) => r.method === 'POST').length, 0);
  // The server says the same kind of thing for the same bytes (4xx, never 500).
  const srv = await http('POST', '/v1/predict', { type: 'application/octet-stream', body: buffer });
  assert.ok(srv.status >= 400 && srv.status < 500, `POST /v1/predict a text file: ${srv.status} ${srv.text}`);
  console.log(`page: ${got.error}\nserver ${srv.status}: ${srv.json?.error?.message}`);
  // Same Rust decoder in wasm and natively: the same message.
  assert.ok(srv.json?.error?.message && got.error.endsWith(srv.json.error.message), `page "${got.error}" vs server "${srv.json?.error?.message}"`);
  // Earlier results are still shown, and the summary counts the failure.
  assert.match(await page.textContent('#summary'), new RegExp(`${images.length + 1} images · ${images.length} classified · 1 failed`));
  assert.deepEqual(pageErrors, []);
});

test('a screenshot of the page is saved as a test artifact', async () => {
  const path = join(ARTIFACTS, 'page.png');
  await page.screenshot({ path, fullPage: true });
  const png = readFileSync(path);
  assert.ok(png.length > 1000 && png.subarray(1, 4).toString() === 'PNG', 'a PNG screenshot');
  console.log(`screenshot: ${path}`);
});
