// Small caches shared by the modes: decoded masks and their drawn layers (keyed by the RLE
// string, so a mask the server sends again is not decoded again), and a count of the work in
// flight that the page exposes to automation (window.sam2kit.settled()).

import { decodeCounts, decodeMask } from "./rle.js";
import { maskLayer } from "./draw.js";

/** A Map that forgets its least recently used entries beyond `limit`. */
export class LRU {
  constructor(limit) { this.limit = limit; this.map = new Map(); }
  get(k) {
    if (!this.map.has(k)) return undefined;
    const v = this.map.get(k);
    this.map.delete(k);
    this.map.set(k, v);
    return v;
  }
  has(k) { return this.map.has(k); }
  set(k, v) {
    this.map.delete(k);
    this.map.set(k, v);
    while (this.map.size > this.limit) this.map.delete(this.map.keys().next().value);
    return v;
  }
  delete(k) { return this.map.delete(k); }
  clear() { this.map.clear(); }
}

const masks = new LRU(256);
const areas = new LRU(1024);
const layers = new LRU(96);

/** The decoded mask of an RLE {size, counts}. */
export function maskOf(rle) {
  const k = `${rle.size}|${rle.counts}`;
  return masks.get(k) ?? masks.set(k, decodeMask(rle));
}

/** The area of an RLE mask (its runs of 1s added up; nothing decoded). */
export function areaOf(rle) {
  const k = `${rle.size}|${rle.counts}`;
  let area = areas.get(k);
  if (area === undefined) {
    area = decodeCounts(rle.counts).reduce((sum, n, i) => (i % 2 ? sum + n : sum), 0);
    areas.set(k, area);
  }
  return area;
}

/** Layers of [{rle, color}] in drawing order: larger masks first (stable for equal areas). */
export function layersBySize(items, options) {
  return items
    .map((it, i) => ({ ...it, i, area: areaOf(it.rle) }))
    .sort((a, b) => b.area - a.area || a.i - b.i)
    .map((it) => layerOf(it.rle, it.color, options));
}

/** The drawn layer (a canvas) of an RLE in a colour. */
export function layerOf(rle, color, { alpha, outline = 1 } = {}) {
  const k = `${rle.size}|${rle.counts}|${color}|${alpha}|${outline}`;
  return layers.get(k) ?? layers.set(k, maskLayer(maskOf(rle), color, { alpha, outline }));
}

let working = 0;

/** Count `promise` as work in flight until it settles; returns it. */
export function pending(promise) {
  working += 1;
  const done = () => { working -= 1; };
  promise.then(done, done);
  return promise;
}

export const workInFlight = () => working;
