// Tiny synthetic X-ray-like images for the browser test: PNG written with
// node:zlib (no dependencies), gray or RGB, with a class-dependent bright blob.

import { deflateSync } from 'node:zlib';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** PNG bytes of 8-bit pixels: `channels` 1 (gray) or 3 (RGB), row-major. */
export function encodePng(width, height, channels, pixels) {
  const colorType = { 1: 0, 2: 4, 3: 2, 4: 6 }[channels];
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; ihdr[9] = colorType; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
  const stride = width * channels;
  const raw = Buffer.alloc((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter: none
    Buffer.from(pixels.buffer, pixels.byteOffset + y * stride, stride).copy(raw, y * (stride + 1) + 1);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function rng(seed) {
  let s = (seed * 2654435761) >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

/**
 * A synthetic "X-ray": dark noisy background, two lung-like gray ellipses and a
 * bright blob (upper left for NORMAL = class 0, lower right for PNEUMONIA = 1).
 */
export function synthetic(cls, seed, width = 48, height = 40, channels = 1) {
  const r = rng(seed * 7 + cls * 1000 + 1);
  const px = new Uint8Array(width * height * channels);
  const bx = (cls === 0 ? 0.3 : 0.7) * width + (r() - 0.5) * width * 0.1;
  const by = (cls === 0 ? 0.3 : 0.7) * height + (r() - 0.5) * height * 0.1;
  const br = Math.min(width, height) * 0.18;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let v = 30 + r() * 25;
      for (const cx of [0.3, 0.7]) {
        const dx = (x - cx * width) / (width * 0.18), dy = (y - 0.5 * height) / (height * 0.35);
        if (dx * dx + dy * dy < 1) v += 50;
      }
      const d2 = ((x - bx) ** 2 + (y - by) ** 2) / (br * br);
      v += 150 * Math.exp(-d2);
      const g = Math.max(0, Math.min(255, Math.round(v)));
      for (let c = 0; c < channels; c++) {
        // RGB: slightly different channels so the luma conversion matters.
        px[(y * width + x) * channels + c] = channels === 1 ? g : Math.max(0, Math.min(255, g + (c - 1) * 12));
      }
    }
  }
  return px;
}

/** Kaggle layout `root/{train,val,test}/{NORMAL,PNEUMONIA}/*.png`. */
export function makeDataset(root, { train = 12, val = 4, test = 4 } = {}) {
  let seed = 0;
  for (const [split, n] of [['train', train], ['val', val], ['test', test]]) {
    for (const [cls, name] of ['NORMAL', 'PNEUMONIA'].entries()) {
      const dir = join(root, split, name);
      mkdirSync(dir, { recursive: true });
      for (let i = 0; i < n; i++) {
        writeFileSync(join(dir, `${name}-${split}-${i}.png`), encodePng(48, 40, 1, synthetic(cls, ++seed)));
      }
    }
  }
}
