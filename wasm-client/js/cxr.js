// cxr.js: the browser/Node-facing API of cxr-wasm.
//
// Wraps the wasm-bindgen output (`cxr_wasm.js` + `cxr_wasm_bg.wasm`, built by
// scripts/build-wasm.sh) and adds small helpers for the cxr HTTP API:
//
//   import { classify } from './pkg/cxr.js';
//   const r = await classify('http://localhost:8080', new Uint8Array(await file.arrayBuffer()));
//   r.label, r.probabilities, r.uploadedBytes
//
// Only the preprocessed size*size grayscale tensor leaves the machine.

import init, * as wasm from './cxr_wasm.js';

let ready = null;

/** Loads and instantiates the wasm module once (idempotent). */
export function initCxr(moduleOrPath) {
  if (!ready) {
    ready = init(moduleOrPath === undefined ? undefined : { module_or_path: moduleOrPath })
      .catch((e) => { ready = null; throw e; });
  }
  return ready;
}

/** An API or client-side failure: `code` is the server's error code (or a local one), `status` the HTTP status (0 when the server could not be reached). */
export class CxrError extends Error {
  constructor(message, { code = 'error', status = 0, cause } = {}) {
    super(message, cause ? { cause } : undefined);
    this.name = 'CxrError';
    this.code = code;
    this.status = status;
  }
}

function trimUrl(url) {
  return (url ?? '').replace(/\/+$/, '');
}

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** fetch() that turns network failures and `{"error": {...}}` answers into CxrError. */
export async function apiFetch(url, init = {}, fetchImpl = globalThis.fetch) {
  let res;
  try {
    res = await fetchImpl(url, init);
  } catch (e) {
    throw new CxrError(`cannot reach the server (${e.message || e})`, { code: 'unreachable', status: 0, cause: e });
  }
  const text = await res.text();
  let body = null;
  if (text) {
    try { body = JSON.parse(text); } catch { body = null; }
  }
  if (!res.ok) {
    const err = body && body.error ? body.error : {};
    throw new CxrError(err.message || `HTTP ${res.status} ${res.statusText || ''}`.trim(), {
      code: err.code || `http_${res.status}`,
      status: res.status,
    });
  }
  return body;
}

/** The active model of `GET {url}/v1/models`, or throws CxrError code `no_active_model` (status 503). */
export async function activeModel(url, { token, fetch: f } = {}) {
  const body = await apiFetch(`${trimUrl(url)}/v1/models`, { headers: authHeaders(token) }, f);
  const model = (body?.models ?? []).find((m) => m.active);
  if (!model) throw new CxrError('no model is active on the server', { code: 'no_active_model', status: 503 });
  if (!model.card?.preprocess) throw new CxrError(`model ${model.id} has no preprocessing spec in its card`, { code: 'bad_card' });
  return model;
}

/** Version of the preprocessing rule this wasm build applies. */
export function specVersion() {
  return wasm.spec_version();
}

/** `{width, height}` of a JPEG/PNG from its header. Throws an Error with the Rust message. */
export function decodeInfo(bytes) {
  const info = wasm.decode_info(bytes);
  const out = { width: info.width, height: info.height };
  info.free();
  return out;
}

/** Encoded image bytes + the model card's `preprocess` spec (object or JSON text) -> Uint8Array(size*size). */
export function preprocess(bytes, spec) {
  const json = typeof spec === 'string' ? spec : JSON.stringify(spec);
  return wasm.preprocess(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), json);
}

/** Uint8Array -> base64 (browser and Node). */
export function toBase64(bytes) {
  if (typeof Buffer !== 'undefined') return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** POST {url}/v1/predict/tensor with preprocessed pixels; resolves to the prediction plus `uploadedBytes` (request body size). */
export async function predictTensor(url, pixels, spec, { token, fetch: f } = {}) {
  const body = JSON.stringify({ size: spec.size, spec_version: spec.version, pixels: toBase64(pixels) });
  const res = await apiFetch(`${trimUrl(url)}/v1/predict/tensor`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...authHeaders(token) },
    body,
  }, f);
  return { ...res, uploadedBytes: new TextEncoder().encode(body).length };
}

/**
 * The whole path: fetch the active model's spec, preprocess locally, upload the tensor.
 * `bytes`: the encoded JPEG/PNG (Uint8Array or ArrayBuffer). Options: `token`, `fetch`, `model` (skip the lookup).
 * Resolves to `{label, probabilities, model_id, timing_ms, uploadedBytes, fileBytes}`.
 */
export async function classify(url, bytes, options = {}) {
  await initCxr(options.wasm);
  const model = options.model ?? await activeModel(url, options);
  const spec = model.card.preprocess;
  const data = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let pixels;
  try {
    pixels = preprocess(data, spec);
  } catch (e) {
    throw new CxrError(e.message || String(e), { code: 'preprocess' });
  }
  const res = await predictTensor(url, pixels, spec, options);
  return { ...res, fileBytes: data.byteLength };
}

export { wasm };
