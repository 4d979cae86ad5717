// cxr web page: classify X-rays with local (wasm) preprocessing, and manage
// fine-tune jobs and models. Plain ES module, no dependencies; the wasm client
// is served from ./pkg/ (built by scripts/build-wasm.sh).

import { initCxr, preprocess, predictTensor, apiFetch, CxrError } from './pkg/cxr.js';

const API = ''; // same origin as the page
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) if (c != null) node.append(c);
  return node;
};
const fmt4 = (x) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(4) : '–');
const fmtBytes = (n) => (n < 1024 ? `${n} B` : n < 1048576 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(2)} MiB`);

// ---------------------------------------------------------------- token & API

const TOKEN_KEY = 'cxr.token';
const tokenInput = $('#token');
tokenInput.value = sessionStorage.getItem(TOKEN_KEY) ?? '';
tokenInput.addEventListener('input', () => {
  const v = tokenInput.value.trim();
  if (v) sessionStorage.setItem(TOKEN_KEY, v); else sessionStorage.removeItem(TOKEN_KEY);
});
$('#token-toggle').addEventListener('click', (e) => {
  const show = tokenInput.type === 'password';
  tokenInput.type = show ? 'text' : 'password';
  e.currentTarget.textContent = show ? 'Hide' : 'Show';
  e.currentTarget.setAttribute('aria-pressed', String(show));
});
const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
const authHeaders = () => (token() ? { Authorization: `Bearer ${token()}` } : {});

function api(path, init = {}) {
  return apiFetch(API + path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
}

/** A user-facing sentence for an API/client error. */
function explain(err, what = 'request') {
  if (!(err instanceof CxrError)) return `${what} failed: ${err?.message || err}`;
  switch (err.status) {
    case 0: return err.code === 'preprocess' ? err.message
      : `The server is not reachable (${what}). Is \`cxr serve\` running?`;
    case 401: return `The server refused the access token (401). Set a valid token under “Train & models”.`;
    case 403: return `This token is not allowed to do that (403).`;
    case 503: return `No model is active on the server (503). Activate one under “Train & models”.`;
    default: return `${err.message}${err.status ? ` (HTTP ${err.status}${err.code && !err.code.startsWith('http_') ? `, ${err.code}` : ''})` : ''}`;
  }
}

function errorBox(message) {
  return el('p', { className: 'error', role: 'alert', textContent: message });
}

// ---------------------------------------------------------------- tabs

const tabs = [...document.querySelectorAll('[role="tab"]')];
function selectTab(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute('aria-selected', String(on));
    t.tabIndex = on ? 0 : -1;
    document.getElementById(t.getAttribute('aria-controls')).hidden = !on;
  }
  if (tab.id === 'tab-train') { refreshJobs(); refreshModels(); }
  history.replaceState(null, '', tab.id === 'tab-train' ? '#train' : '#classify');
}
tabs.forEach((t, i) => {
  t.addEventListener('click', () => selectTab(t));
  t.addEventListener('keydown', (e) => {
    const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
    if (!d) return;
    const next = tabs[(i + d + tabs.length) % tabs.length];
    next.focus(); selectTab(next);
  });
});

// ---------------------------------------------------------------- status / active model

const statusEl = $('#status');
let activeModel = null; // the active entry of GET /v1/models
let modelsList = [];

function setStatus(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

async function loadModels() {
  try {
    const body = await api('/v1/models');
    modelsList = body?.models ?? [];
    activeModel = modelsList.find((m) => m.active) ?? null;
    if (activeModel) {
      const c = activeModel.card ?? {};
      const size = c.preprocess?.size ?? c.input_size;
      setStatus('ok', `Server online · active model ${activeModel.id}${c.arch ? ` (${c.arch}, ${size}px)` : ''}`);
    } else {
      setStatus('warn', 'Server online · no active model: activate one under “Train & models”');
    }
    statusEl.dataset.modelId = activeModel?.id ?? '';
  } catch (err) {
    activeModel = null;
    modelsList = [];
    setStatus('down', err.status === 0 ? 'Server unreachable' : explain(err, 'loading models'));
    throw err;
  }
  return activeModel;
}

// ---------------------------------------------------------------- classify

const results = $('#results');
const template = $('#result-template');
const summary = $('#summary');
const clearBtn = $('#clear-results');
let wasmReady = null;
const stats = { done: 0, failed: 0 };

function updateSummary() {
  const n = results.children.length;
  summary.textContent = n ? `${n} image${n > 1 ? 's' : ''} · ${stats.done} classified${stats.failed ? ` · ${stats.failed} failed` : ''}` : '';
  clearBtn.hidden = n === 0;
}
clearBtn.addEventListener('click', () => {
  for (const img of results.querySelectorAll('img.preview-img')) URL.revokeObjectURL(img.src);
  results.replaceChildren();
  stats.done = stats.failed = 0;
  updateSummary();
});

function resultCard(file) {
  const node = template.content.firstElementChild.cloneNode(true);
  node.dataset.file = file.name;
  node.dataset.state = 'pending';
  $('.file-name', node).textContent = file.name;
  const img = $('.preview-img', node);
  img.src = URL.createObjectURL(file);
  img.alt = `Preview of ${file.name}`;
  img.addEventListener('error', () => {
    img.hidden = true;
    $('.preview', node).classList.add('no-preview');
    $('.preview', node).setAttribute('aria-label', `${file.name}: no preview`);
  }, { once: true });
  return node;
}

function fail(node, message) {
  node.dataset.state = 'error';
  $('.state', node).replaceWith(errorBox(message));
  stats.failed++;
  updateSummary();
}

function renderPrediction(node, res, file) {
  node.dataset.state = 'done';
  $('.state', node).hidden = true;
  const label = $('.label', node);
  label.hidden = false;
  label.dataset.label = res.label;
  label.textContent = res.label;
  const probs = $('.probs', node);
  probs.hidden = false;
  const classes = activeModel?.card?.classes ?? Object.keys(res.probabilities ?? {});
  probs.replaceChildren(...classes.map((cls) => {
    const p = Number(res.probabilities?.[cls] ?? 0);
    const bar = el('span');
    bar.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
    const val = el('span', { className: 'prob', textContent: p.toFixed(4) });
    val.dataset.class = cls;
    val.dataset.value = String(p);
    const row = el('div', { className: 'prob-row' },
      el('span', { textContent: cls }),
      el('div', { className: 'bar', role: 'presentation' }, bar),
      val);
    row.dataset.class = cls;
    row.setAttribute('aria-label', `${cls}: ${(p * 100).toFixed(1)} percent`);
    return row;
  }));
  const up = $('.upload', node);
  up.hidden = false;
  const pct = file.size ? (100 * res.uploadedBytes) / file.size : 0;
  up.textContent = `Uploaded ${res.uploadedBytes.toLocaleString('en')} bytes of ${file.size.toLocaleString('en')} (${pct.toFixed(pct < 1 ? 2 : 1)}% of the file)`
    + (res.model_id ? ` · model ${res.model_id}` : '');
  up.dataset.uploaded = String(res.uploadedBytes);
  up.dataset.fileBytes = String(file.size);
  $('.actions', node).hidden = false;
  stats.done++;
  updateSummary();
}

async function classifyFile(file, node) {
  let bytes;
  try {
    bytes = new Uint8Array(await file.arrayBuffer());
  } catch (err) {
    return fail(node, `Could not read the file: ${err.message || err}`);
  }
  try {
    wasmReady ??= initCxr();
    await wasmReady;
  } catch (err) {
    wasmReady = null;
    return fail(node, `The local preprocessing module (WebAssembly) could not be loaded: ${err.message || err}`);
  }
  let model = activeModel;
  if (!model) {
    try { model = await loadModels(); } catch (err) { return fail(node, explain(err, 'loading the active model')); }
    if (!model) return fail(node, explain(new CxrError('no active model', { status: 503 })));
  }
  const spec = model.card?.preprocess;
  if (!spec) return fail(node, `The active model ${model.id} has no preprocessing spec in its card.`);
  let pixels;
  try {
    pixels = preprocess(bytes, spec);
  } catch (err) {
    return fail(node, `${file.name} could not be preprocessed: ${err.message || err}`);
  }
  $('.state', node).textContent = `Preprocessed to ${spec.size}×${spec.size} locally · uploading…`;
  try {
    const res = await predictTensor(API, pixels, spec, { token: token() });
    renderPrediction(node, res, file);
  } catch (err) {
    if (err.status === 503 || err.status === 422) loadModels().catch(() => {}); // the active model changed
    fail(node, explain(err, 'classification'));
  }
}

async function gradcam(node, file, button) {
  const overlay = $('.heatmap', node);
  const opacity = $('.opacity', node);
  if (overlay.src && !overlay.hidden) {
    overlay.hidden = true; opacity.hidden = true; button.textContent = 'Show Grad-CAM';
    return;
  }
  if (overlay.src) {
    overlay.hidden = false; opacity.hidden = false; button.textContent = 'Hide Grad-CAM';
    return;
  }
  button.disabled = true;
  button.textContent = 'Computing Grad-CAM…';
  node.querySelector('.gradcam-error')?.remove();
  try {
    const type = file.type || (/\.png$/i.test(file.name) ? 'image/png' : 'image/jpeg');
    const res = await api('/v1/predict?explain=true', { method: 'POST', headers: { 'Content-Type': type }, body: file });
    if (!res?.gradcam_png) throw new CxrError('the server returned no Grad-CAM image', { code: 'no_gradcam', status: 500 });
    overlay.src = `data:image/png;base64,${res.gradcam_png}`;
    overlay.alt = `Grad-CAM heatmap for ${file.name}`;
    overlay.hidden = false;
    opacity.hidden = false;
    button.textContent = 'Hide Grad-CAM';
  } catch (err) {
    const box = errorBox(`Grad-CAM: ${explain(err, 'Grad-CAM')}`);
    box.classList.add('gradcam-error');
    $('.actions', node).after(box);
    button.textContent = 'Show Grad-CAM';
  } finally {
    button.disabled = false;
  }
}

function addFiles(files) {
  const list = [...files];
  if (!list.length) return;
  const jobs = list.map((file) => {
    const node = resultCard(file);
    const btn = $('.gradcam-btn', node);
    btn.addEventListener('click', () => gradcam(node, file, btn));
    $('.opacity-range', node).addEventListener('input', (e) => { $('.heatmap', node).style.opacity = String(e.target.value / 100); });
    return [file, node];
  });
  results.prepend(...jobs.map(([, node]) => node)); // newest batch first, in file order
  updateSummary();
  // One at a time: keeps the page responsive and the server unhurried.
  (async () => { for (const [file, node] of jobs) await classifyFile(file, node); })();
}

const fileInput = $('#file-input');
fileInput.addEventListener('change', () => { addFiles(fileInput.files); fileInput.value = ''; });
const drop = $('#drop');
for (const ev of ['dragenter', 'dragover']) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add('dragover'); });
for (const ev of ['dragleave', 'drop']) drop.addEventListener(ev, () => drop.classList.remove('dragover'));
drop.addEventListener('drop', (e) => { e.preventDefault(); addFiles(e.dataTransfer?.files ?? []); });
// Dropping outside the zone must not navigate away from the page.
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => { e.preventDefault(); if (e.dataTransfer?.files?.length) addFiles(e.dataTransfer.files); });

// ---------------------------------------------------------------- jobs

const TERMINAL = new Set(['succeeded', 'done', 'completed', 'failed', 'error', 'cancelled', 'canceled']);
const jobsBody = $('#jobs tbody');
const jobForm = $('#job-form');
const recipeSel = $('#job-recipe');
const customStage = $('#custom-stage');
let selectedJob = null;
let source = null; // EventSource of the selected job

recipeSel.addEventListener('change', () => {
  const custom = recipeSel.value === 'custom';
  customStage.hidden = !custom;
  customStage.disabled = !custom;
});

function setMsg(target, message, kind = 'error') {
  const box = $(target);
  box.replaceChildren(message ? (kind === 'error' ? errorBox(message) : el('p', { className: 'notice', textContent: message })) : '');
}

jobForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const data = new FormData(jobForm);
  const body = { dataset: String(data.get('dataset')).trim() };
  if (recipeSel.value === 'custom') {
    const stage = {
      arch: data.get('arch'),
      size: Number(data.get('size')),
      epochs: Number(data.get('epochs')),
      bs: Number(data.get('bs')),
      lr: Number(data.get('lr')),
    };
    if (String(data.get('presize') ?? '').trim()) stage.presize = Number(data.get('presize'));
    body.stages = [stage];
  } else {
    body.recipe = recipeSel.value;
  }
  const submit = $('button[type="submit"]', jobForm);
  submit.disabled = true;
  try {
    const job = await api('/v1/jobs', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    setMsg('#job-form-msg', `Job ${job.id} ${job.state ?? 'queued'}.`, 'ok');
    await refreshJobs();
    if (job?.id) showJob(job.id);
  } catch (err) {
    setMsg('#job-form-msg', explain(err, 'starting the job'));
  } finally {
    submit.disabled = false;
  }
});

function jobProgressText(j) {
  const parts = [];
  if (j.stage != null) parts.push(`stage ${j.stage}`);
  if (j.epoch != null) parts.push(`epoch ${j.epoch}`);
  const last = j.metrics?.at?.(-1);
  if (last?.accuracy != null) parts.push(`acc ${fmt4(last.accuracy)}`);
  return parts.join(' · ') || '–';
}

async function refreshJobs() {
  try {
    const body = await api('/v1/jobs');
    const jobs = body?.jobs ?? [];
    setMsg('#jobs-msg', '');
    if (!jobs.length) {
      jobsBody.replaceChildren(el('tr', { className: 'empty' }, el('td', { colSpan: 5, textContent: 'No jobs yet.' })));
      return;
    }
    jobsBody.replaceChildren(...jobs.map((j) => {
      const tr = el('tr');
      tr.dataset.jobId = j.id;
      if (j.id === selectedJob) tr.classList.add('selected');
      const badge = el('span', { className: 'badge', textContent: j.state });
      badge.dataset.state = j.state;
      const view = el('button', { type: 'button', textContent: 'Details', className: 'ghost' });
      view.addEventListener('click', () => showJob(j.id));
      const actions = el('td', {}, view);
      if (!TERMINAL.has(j.state)) {
        const cancel = el('button', { type: 'button', textContent: 'Cancel', className: 'ghost' });
        cancel.addEventListener('click', () => cancelJob(j.id, cancel));
        actions.append(' ', cancel);
      }
      tr.append(
        el('td', {}, el('code', { textContent: j.id }), j.dataset ? el('div', { className: 'muted', textContent: j.dataset }) : null),
        el('td', {}, badge),
        el('td', { textContent: jobProgressText(j) }),
        el('td', {}, j.model_id ? el('code', { textContent: j.model_id }) : '–'),
        actions);
      return tr;
    }));
  } catch (err) {
    setMsg('#jobs-msg', explain(err, 'listing jobs'));
  }
}
$('#jobs-refresh').addEventListener('click', refreshJobs);

async function cancelJob(id, button) {
  button.disabled = true;
  try {
    await api(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
    setMsg('#jobs-msg', `Cancellation of job ${id} requested.`, 'ok');
  } catch (err) {
    setMsg('#jobs-msg', explain(err, 'cancelling the job'));
  } finally {
    button.disabled = false;
    refreshJobs();
  }
}

// ---- job detail

const detail = $('#job-detail');
const metricsBody = $('#job-metrics tbody');
const progressBar = $('.progress', detail);

function setJobState(state) {
  const badge = $('#job-detail-state');
  badge.textContent = state ?? '';
  badge.dataset.state = state ?? '';
  detail.dataset.state = state ?? '';
}

function metricRow(m) {
  const tr = el('tr', {},
    el('td', { textContent: String(m.epoch ?? '') }),
    ...['train_loss', 'valid_loss', 'accuracy', 'f1', 'precision', 'recall', 'auc'].map((k) => el('td', { textContent: fmt4(m[k]) })),
    el('td', { textContent: typeof m.seconds === 'number' ? m.seconds.toFixed(1) : '–' }));
  tr.dataset.epoch = String(m.epoch);
  return tr;
}

function addMetric(m) {
  const key = `${m.stage ?? ''}:${m.epoch}`;
  const existing = [...metricsBody.children].find((tr) => tr.dataset.key === key);
  const tr = metricRow(m);
  tr.dataset.key = key;
  if (existing) existing.replaceWith(tr); else metricsBody.append(tr);
}

function loadFigures(id) {
  const bust = Date.now();
  for (const [imgSel, name] of [['#job-losses', 'losses.png'], ['#job-confusion', 'confusion_matrix.png']]) {
    const img = $(imgSel);
    const note = $('.fig-note', img.closest('figure'));
    img.onload = () => { img.hidden = false; note.textContent = ''; };
    img.onerror = () => { img.hidden = true; note.textContent = '(not available yet)'; };
    img.src = `${API}/v1/jobs/${encodeURIComponent(id)}/report/${name}?t=${bust}`;
  }
}

function setProgress(p) {
  const frac = p.iters ? Math.min(1, p.iter / p.iters) : 0;
  $('.progress-bar', progressBar).style.width = `${(frac * 100).toFixed(1)}%`;
  progressBar.setAttribute('aria-valuenow', String(Math.round(frac * 100)));
  $('#job-progress-text').textContent = `Stage ${p.stage ?? '?'} · epoch ${p.epoch ?? '?'} · iteration ${p.iter ?? '?'}/${p.iters ?? '?'}`
    + (typeof p.loss === 'number' ? ` · loss ${p.loss.toFixed(4)}` : '');
}

async function showJob(id) {
  selectedJob = id;
  for (const tr of jobsBody.children) tr.classList.toggle('selected', tr.dataset.jobId === id);
  source?.close();
  source = null;
  detail.hidden = false;
  $('#job-detail-id').textContent = id;
  metricsBody.replaceChildren();
  $('#job-progress-text').textContent = 'Loading…';
  const errBox = $('#job-error');
  errBox.hidden = true;
  errBox.className = '';
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (err) {
    errBox.hidden = false;
    errBox.className = 'error';
    errBox.textContent = explain(err, 'loading the job');
    return;
  }
  if (selectedJob !== id) return;
  setJobState(job.state);
  for (const m of job.metrics ?? []) addMetric(m);
  $('#job-progress-text').textContent = TERMINAL.has(job.state)
    ? `Finished: ${job.state}${job.model_id ? ` · model ${job.model_id}` : ''}`
    : `Stage ${job.stage ?? '?'} · epoch ${job.epoch ?? '?'} · waiting for progress…`;
  if (TERMINAL.has(job.state)) {
    $('.progress-bar', progressBar).style.width = '100%';
    progressBar.setAttribute('aria-valuenow', '100');
  }
  if (job.error) {
    errBox.hidden = false;
    errBox.className = 'error';
    errBox.textContent = `Job failed: ${job.error}`;
  }
  loadFigures(id);
  if (TERMINAL.has(job.state)) return;
  // EventSource cannot send an Authorization header: the event stream is public.
  source = new EventSource(`${API}/v1/jobs/${encodeURIComponent(id)}/events`);
  const parse = (e) => { try { return JSON.parse(e.data); } catch { return null; } };
  source.addEventListener('progress', (e) => { const p = parse(e); if (p && selectedJob === id) setProgress(p); });
  source.addEventListener('epoch', (e) => {
    const m = parse(e);
    if (!m || selectedJob !== id) return;
    addMetric(m);
    loadFigures(id);
  });
  source.addEventListener('state', (e) => {
    const s = parse(e);
    if (!s || selectedJob !== id) return;
    setJobState(s.state);
    if (TERMINAL.has(s.state)) {
      source?.close();
      source = null;
      // Fetch the final record (error text, model id) and the final figures.
      showJob(id);
      refreshJobs();
      refreshModels();
    } else {
      refreshJobs();
    }
  });
  source.onerror = () => {
    if (source && source.readyState === EventSource.CLOSED && selectedJob === id) {
      $('#job-progress-text').textContent = 'Live updates disconnected. Use Refresh to reload.';
    }
  };
}

// ---------------------------------------------------------------- models

const modelsBody = $('#models tbody');

async function refreshModels() {
  try {
    await loadModels();
    setMsg('#models-msg', '');
  } catch (err) {
    setMsg('#models-msg', explain(err, 'listing models'));
    modelsBody.replaceChildren();
    return;
  }
  if (!modelsList.length) {
    modelsBody.replaceChildren(el('tr', { className: 'empty' }, el('td', { colSpan: 8, textContent: 'No models yet: train one above.' })));
    return;
  }
  modelsBody.replaceChildren(...modelsList.map((m) => {
    const c = m.card ?? {};
    const x = m.metrics ?? {};
    let action;
    if (m.active) {
      action = el('span', { className: 'badge', textContent: 'active' });
      action.dataset.state = 'active';
    } else {
      action = el('button', { type: 'button', textContent: 'Activate' });
      action.addEventListener('click', () => activate(m.id, action));
    }
    const tr = el('tr', {},
      el('td', {}, el('code', { textContent: m.id })),
      el('td', { textContent: c.arch ?? '–' }),
      el('td', { textContent: c.preprocess?.size ?? c.input_size ?? '–' }),
      el('td', { textContent: fmt4(x.accuracy) }),
      el('td', { textContent: fmt4(x.f1) }),
      el('td', { textContent: fmt4(x.auc) }),
      el('td', { textContent: m.created_at ? new Date(m.created_at).toLocaleString() : '–' }),
      el('td', {}, action));
    tr.dataset.modelId = m.id;
    if (m.active) tr.classList.add('selected');
    return tr;
  }));
}
$('#models-refresh').addEventListener('click', refreshModels);

async function activate(id, button) {
  button.disabled = true;
  try {
    await api(`/v1/models/${encodeURIComponent(id)}/activate`, { method: 'POST' });
  } catch (err) {
    setMsg('#models-msg', explain(err, 'activating the model'));
    button.disabled = false;
    return;
  }
  await refreshModels();
  setMsg('#models-msg', `Model ${id} is now active.`, 'ok');
}

// ---------------------------------------------------------------- start

updateSummary();
loadModels().catch(() => {});
if (location.hash === '#train') selectTab($('#tab-train'));
