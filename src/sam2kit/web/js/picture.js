// Pictures: open one, click/box for masks (three candidates each), several objects,
// "segment everything", exports. Prompts live in the document (undoable); the masks the server
// returned for each prompt set are kept in a cache keyed by the prompts, so undo/redo redraw
// at once and only new prompt sets go to the server.

import * as api from "./api.js";
import { LRU, layerOf, layersBySize, maskOf, pending } from "./cache.js";
import * as D from "./doc.js";
import { colorFor } from "./draw.js";
import { commit, getState, reset, showError, startJob, touch, update } from "./state.js";

const predictions = new LRU(512); // prompt key -> {response} | {waiting: true}
const lastShown = new Map();      // object id -> the mask drawn last ({key, rle}), kept while waiting
let latencyMark = null;           // {objectId, key, t0, answered}: the click whose mask is awaited
export const latencies = [];      // [{ms: click to mask drawn, answerMs: click to the server's answer}]

const promptKey = (p) => JSON.stringify([p.points, p.box]);

export async function open(source, name) {
  const job = startJob(`Opening ${name}: reading it and computing its embedding`);
  try {
    const info = await api.openImage(source);
    const bitmap = await createImageBitmap(await api.picture(info.image_id));
    const video = getState().video?.id;
    if (video) api.closeVideo(video).catch(() => {}); // free the server's session
    predictions.clear();
    lastShown.clear();
    latencyMark = null;
    reset({ mode: "picture", picture: { id: info.image_id, width: info.width, height: info.height, name, bitmap } });
    job.end(`Opened ${name} (${info.width}x${info.height}) in ${job.elapsed().toFixed(1)} s`
      + `${info.cached ? " (embedding reused)" : ""}. Click an object; right click or Alt+click excludes; drag for a box.`);
  } catch (e) {
    job.end();
    throw e;
  }
}

/** Ask the server for the masks of every object whose prompts have none yet. */
export function sync() {
  const s = getState();
  if (s.mode !== "picture") return;
  for (const obj of s.doc.objects) {
    const p = D.promptsOf(s.doc, 0, obj.id);
    if (!p.points.length && !p.box) continue;
    const k = promptKey(p);
    if (predictions.has(k)) continue;
    predictions.set(k, { waiting: true });
    const imageId = s.picture.id;
    const body = { points: p.points.map(([x, y]) => [x, y]), labels: p.points.map((q) => q[2]), box: p.box, multimask: true };
    pending(api.predict(imageId, body).then((response) => {
      if (getState().picture?.id !== imageId) return;
      if (latencyMark?.key === k) latencyMark.answered = performance.now();
      predictions.set(k, { response });
      touch();
    }, (e) => {
      predictions.delete(k);
      showError(e);
    }));
  }
}

/** The current mask of an object: {rle, key, response, index} or null. */
export function maskOfObject(doc, obj) {
  if (obj.rle) return { rle: obj.rle, key: null, response: null, index: null };
  const p = D.promptsOf(doc, 0, obj.id);
  if (!p.points.length && !p.box) return null;
  const k = promptKey(p);
  const got = predictions.get(k);
  if (got?.response) {
    const index = obj.choice ?? got.response.best;
    const shown = { rle: got.response.masks[index].rle, key: k, response: got.response, index };
    lastShown.set(obj.id, shown);
    return shown;
  }
  return lastShown.get(obj.id) ?? null;
}

/** The layers the main canvas draws ([canvas]), and the prompt keys they show. */
export function layers(s, outline) {
  const items = [], keys = [];
  for (const obj of s.doc.objects) {
    if (obj.hidden) continue;
    const m = maskOfObject(s.doc, obj);
    if (!m) continue;
    items.push({ rle: m.rle, color: obj.color });
    keys.push([obj.id, m.key]);
  }
  const out = layersBySize(items, { outline });
  if (s.everything) {
    s.everything.anns.forEach((a, i) => {
      const strong = i === s.everything.hover;
      out.push(layerOf(a.rle, strong ? [255, 255, 255] : a.color, { alpha: strong ? 150 : 70, outline: strong ? outline * 2 : 0 }));
    });
  }
  return { layers: out, keys };
}

/** Called once the canvas shows `keys`: a click's mask on screen ends its latency measure. */
export function drawn(keys) {
  if (!latencyMark) return null;
  const hit = keys.some(([id, k]) => id === latencyMark.objectId && k === latencyMark.key);
  if (!hit) return null;
  const now = performance.now(), { t0, answered } = latencyMark;
  latencyMark = null;
  latencies.push({ ms: now - t0, answerMs: (answered ?? now) - t0 });
  return now - t0;
}

function selectedForPrompt(doc) {
  const obj = D.objectById(doc, doc.selected);
  if (obj && !obj.rle) return [doc, obj.id];
  return D.addObject(doc); // none yet, or an object from "segment everything" (fixed mask)
}

/** A click at (x, y) (picture pixels); label 1 adds, 0 excludes; near one of the selected
 *  object's points, removes that point. `t0` is the click event's time. */
export function click(x, y, label, t0, radius) {
  const s = getState();
  if (s.everything) return addFromEverything(x, y);
  let [doc, id] = selectedForPrompt(s.doc);
  const near = D.pointNear(doc, 0, id, x, y, radius);
  doc = near >= 0 ? D.removePoint(doc, 0, id, near) : D.addPoint(doc, 0, id, [x, y, label]);
  finish(doc, id, t0);
}

export function box(b, t0) {
  const s = getState();
  if (s.everything) return;
  let [doc, id] = selectedForPrompt(s.doc);
  doc = D.setBox(doc, 0, id, b);
  finish(doc, id, t0);
}

function finish(doc, id, t0) {
  commit(doc);
  const p = D.promptsOf(doc, 0, id);
  latencyMark = p.points.length || p.box ? { objectId: id, key: promptKey(p), t0 } : null;
  sync();
}

/** The candidates of the selected object: [{rle, score, chosen}] or []. */
export function candidates(s) {
  const obj = D.objectById(s.doc, s.doc.selected);
  const m = obj && maskOfObject(s.doc, obj);
  if (!m?.response) return [];
  return m.response.masks.map((c, i) => ({ rle: c.rle, score: c.score, chosen: i === m.index, color: obj.color }));
}

export function choose(index) {
  const s = getState();
  const obj = D.objectById(s.doc, s.doc.selected);
  if (!obj || !maskOfObject(s.doc, obj)?.response) return;
  commit(D.changeObject(s.doc, obj.id, { choice: index }));
}

// ---- segment everything -------------------------------------------------------------------

export async function segmentEverything(params) {
  const s = getState();
  const n = params.points_per_side ** 2;
  const job = startJob(`Segmenting everything: ${n} prompts over the picture`);
  try {
    const result = await pending(api.automatic(s.picture.id, params));
    const anns = result.annotations
      .map((a) => ({ rle: a.segmentation, area: a.area, bbox: a.bbox }))
      .sort((a, b) => b.area - a.area) // small masks last: drawn on top, found first on hover
      .map((a, i) => ({ ...a, color: colorFor(i + 1) }));
    update({ everything: { anns, hover: null } });
    job.end(anns.length
      ? `Segment everything: ${anns.length} mask${anns.length === 1 ? "" : "s"} in ${job.elapsed().toFixed(1)} s. Hover to see one, click to add it as an object; Esc to leave.`
      : `Segment everything found no mask (${job.elapsed().toFixed(1)} s); try a finer grid or lower thresholds.`);
  } catch (e) {
    job.end();
    throw e;
  }
}

/** The index of the smallest mask of "segment everything" under (x, y), or null. */
function annAt(anns, x, y) {
  const xi = Math.floor(x), yi = Math.floor(y);
  for (let i = anns.length - 1; i >= 0; i--) {
    const m = maskOf(anns[i].rle);
    if (xi >= 0 && yi >= 0 && xi < m.width && yi < m.height && m.data[yi * m.width + xi]) return i;
  }
  return null;
}

export function hover(x, y) {
  const s = getState();
  if (!s.everything) return;
  const i = annAt(s.everything.anns, x, y);
  if (i !== s.everything.hover) update({ everything: { ...s.everything, hover: i } });
}

function addFromEverything(x, y) {
  const s = getState();
  const i = annAt(s.everything.anns, x, y);
  if (i === null) return;
  const [doc] = D.addObject(s.doc, { rle: s.everything.anns[i].rle });
  commit(doc);
}

export function leaveEverything() { update({ everything: null }); }

export const objectMasks = (s) => s.doc.objects
  .map((obj) => ({ obj, m: maskOfObject(s.doc, obj) }))
  .filter(({ m }) => m);
