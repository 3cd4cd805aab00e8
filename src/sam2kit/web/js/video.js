// Videos: frames come from the server as JPEG, masks as RLE. Clicks add prompts for the
// selected object on the shown frame (kept in the undoable document); sync() makes the
// server's prompts equal the document's, one request at a time. Tracking streams each frame's
// masks into the view as the server finishes it; Cancel closes the stream.

import * as api from "./api.js";
import { LRU, layersBySize, pending } from "./cache.js";
import * as D from "./doc.js";
import { commit, getState, reset, showError, startJob, touch, update } from "./state.js";

const frames = new LRU(96);     // frame index -> ImageBitmap
const loading = new Map();      // frame index -> Promise
const frameMasks = new Map();   // frame index -> [{object, rle, object_score}] as the server said
const maskLoading = new Set();
const sent = new Map();         // "frame:object" -> the prompts the server has (JSON)
let epoch = 0;                  // bumped by every change on the server (drops stale reads)
let syncing = null, again = false;
let tracker = null;             // {abort: AbortController, stopped: Promise | null}
let latencyMark = null;
export const latencies = [];
export const lastStream = [];   // the lines of the last tracking as received (for automation)

const sid = () => getState().video.id;

export async function open(source, name) {
  const job = startJob(`Opening ${name}`);
  try {
    const info = await api.openVideo(source);
    const previous = getState().video?.id;
    if (previous) api.closeVideo(previous).catch(() => {}); // free the server's session
    for (const m of [frames, frameMasks, sent]) m.clear();
    loading.clear();
    maskLoading.clear();
    epoch += 1;
    reset({ mode: "video", frame: 0, video: { id: info.session_id, numFrames: info.num_frames,
      width: info.width, height: info.height, fps: info.fps, name } });
    await pending(loadFrame(0));
    seek(0);
    job.end(`Opened ${name}: ${info.num_frames} frames, ${info.width}x${info.height}`
      + `${info.fps ? `, ${info.fps} fps` : ""}. Click an object on any frame, then Track.`);
  } catch (e) {
    job.end();
    throw e;
  }
}

function loadFrame(i) {
  if (frames.has(i)) return Promise.resolve(frames.get(i));
  if (loading.has(i)) return loading.get(i);
  const id = sid();
  const p = api.frame(id, i).then(createImageBitmap).then((bitmap) => {
    loading.delete(i);
    if (getState().video?.id !== id) return null;
    frames.set(i, bitmap);
    touch();
    return bitmap;
  }, (e) => { loading.delete(i); throw e; });
  loading.set(i, p);
  return p;
}

function loadMasks(i) {
  if (frameMasks.has(i) || maskLoading.has(i) || getState().tracking) return;
  const id = sid(), seen = epoch;
  maskLoading.add(i);
  pending(api.frameMasks(id, i).then((r) => {
    if (getState().video?.id === id && epoch === seen) frameMasks.set(i, r.objects);
    touch();
  }).catch(showError).finally(() => maskLoading.delete(i)));
}

/** Show frame i (its picture and masks load if they are not here yet). */
export function seek(i, { follow = false } = {}) {
  const s = getState();
  if (!s.video) return;
  i = Math.max(0, Math.min(s.video.numFrames - 1, Math.round(i)));
  update({ frame: i, follow });
  pending(loadFrame(i).catch(showError));
  loadMasks(i);
  for (let k = 1; k <= 3 && i + k < s.video.numFrames; k++) loadFrame(i + k).catch(() => {});
}

export function togglePlay() {
  const s = getState();
  if (!s.video) return;
  if (s.playing) return update({ playing: false });
  if (s.frame >= s.video.numFrames - 1) seek(0);
  update({ playing: true });
  play();
}

async function play() {
  const period = 1000 / (getState().video.fps || 25);
  let next = performance.now() + period;
  while (getState().playing) {
    const s = getState();
    if (s.frame >= s.video.numFrames - 1) break;
    try {
      await loadFrame(s.frame + 1);
    } catch (e) {
      showError(e);
      break;
    }
    await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
    next = Math.max(performance.now(), next) + period;
    if (!getState().playing) break;
    seek(getState().frame + 1);
  }
  update({ playing: false });
}

/** The shown frame's picture (null while it loads), for the view. */
export const frameBitmap = (i) => frames.get(i) ?? null;
export const masksKnown = (i) => frameMasks.has(i);

/** The layers of the shown frame: each shown object's mask (larger ones first). */
export function layers(s, outline) {
  const items = [];
  for (const o of frameMasks.get(s.frame) || []) {
    const obj = D.objectById(s.doc, o.object);
    if (obj && !obj.hidden) items.push({ rle: o.rle, color: obj.color });
  }
  return { layers: layersBySize(items, { outline }), keys: [] };
}

export function drawn() {
  if (!latencyMark || latencyMark.epoch > epoch || !frameMasks.has(latencyMark.frame)) return null;
  if (getState().frame !== latencyMark.frame || syncing) return null;
  const ms = performance.now() - latencyMark.t0;
  latencyMark = null;
  latencies.push({ ms, answerMs: null });
  return ms;
}

// ---- prompts ------------------------------------------------------------------------------

function selectedForPrompt(doc) {
  const obj = D.objectById(doc, doc.selected);
  return obj ? [doc, obj.id] : D.addObject(doc);
}

function busyTracking() {
  if (!getState().tracking) return false;
  showError("Tracking is running: wait for it or press Cancel before changing the prompts.");
  return true;
}

export function click(x, y, label, t0, radius) {
  if (busyTracking()) return;
  const s = getState();
  let [doc, id] = selectedForPrompt(s.doc);
  const near = D.pointNear(doc, s.frame, id, x, y, radius);
  doc = near >= 0 ? D.removePoint(doc, s.frame, id, near) : D.addPoint(doc, s.frame, id, [x, y, label]);
  commit(doc);
  latencyMark = { frame: s.frame, t0, epoch: epoch + 1 };
  sync();
}

export function box(b, t0) {
  if (busyTracking()) return;
  const s = getState();
  const [doc, id] = selectedForPrompt(s.doc);
  commit(D.setBox(doc, s.frame, id, b));
  latencyMark = { frame: s.frame, t0, epoch: epoch + 1 };
  sync();
}

/** Make the server's prompts those of the document (after clicks, deletions, undo, redo). */
export function sync() {
  if (getState().mode !== "video") return Promise.resolve();
  if (syncing) { again = true; return syncing; }
  syncing = pending((async () => {
    try {
      do { again = false; await syncOnce(); } while (again);
    } catch (e) {
      showError(e);
    } finally {
      syncing = null;
      touch();
    }
  })());
  return syncing;
}

async function syncOnce() {
  const s = getState();
  if (s.tracking) return;
  const id = s.video.id;
  const wanted = new Map(D.allPrompts(s.doc).map(([f, o, p]) => [D.key(f, o), p]));
  // An object deleted, or a frame's prompts emptied (an undo): the server cannot drop one
  // frame's prompts of an object, so the object goes and its other prompts are sent again.
  const rebuild = new Set([...sent.keys()].filter((k) => !wanted.has(k)).map((k) => D.parseKey(k)[1]));
  for (const obj of rebuild) {
    await api.removeObject(id, obj).catch((e) => { if (e.status !== 404) throw e; });
    epoch += 1;
    for (const k of [...sent.keys()]) if (D.parseKey(k)[1] === obj) sent.delete(k);
    for (const [f, list] of frameMasks) frameMasks.set(f, list.filter((o) => o.object !== obj));
    touch();
  }
  for (const [k, p] of wanted) {
    const sig = JSON.stringify(p);
    if (sent.get(k) === sig) continue;
    const [frame, object] = D.parseKey(k);
    const r = await api.prompt(id, { frame, object, points: p.points.map(([x, y]) => [x, y]),
      labels: p.points.map((q) => q[2]), box: p.box, clear_old: true });
    epoch += 1;
    sent.set(k, sig);
    frameMasks.set(frame, r.objects);
    touch();
    if (getState().doc !== s.doc) { again = true; return; }
  }
}

/** Remove every object and prompt (undoable: undo sends the prompts again). */
export function clearAll() {
  if (busyTracking()) return;
  commit({ ...getState().doc, objects: [], prompts: {}, selected: null });
  sync();
}

// ---- tracking -----------------------------------------------------------------------------

/** Track from the shown frame: direction "forward" | "backward" | "both"; maxFrames or null. */
export async function track(direction, maxFrames) {
  let s = getState();
  if (s.tracking) return;
  if (!Object.keys(s.doc.prompts).length) throw new Error("Nothing to track yet: click an object on a frame first.");
  await sync();
  s = getState();
  const start = s.frame, n = s.video.numFrames;
  const runs = direction === "both" ? [false, true] : [direction === "backward"];
  const span = (reverse) => Math.min(maxFrames || Infinity, reverse ? start + 1 : n - start);
  const total = runs.reduce((t, r) => t + span(r), 0);
  tracker = { abort: new AbortController(), stopped: null };
  const job = startJob(`Tracking ${direction} from frame ${start}`, total);
  update({ tracking: { direction, done: 0, total, started: performance.now(), cancelling: false }, follow: true });
  let done = 0, outcome = null;
  lastStream.length = 0;
  const onItem = (item, line) => {
    lastStream.push(line);
    if (item.frame === undefined) return;
    frameMasks.set(item.frame, item.objects);
    epoch += 1;
    done += 1;
    job.progress(done, total);
    const t = getState();
    update({ tracking: { ...t.tracking, done }, frame: t.follow ? item.frame : t.frame });
    if (t.follow) pending(loadFrame(item.frame).catch(() => {}));
  };
  try {
    for (const reverse of runs) {
      const last = await api.propagate(s.video.id, { start_frame: start, reverse, max_frames: maxFrames || null },
        onItem, tracker.abort.signal);
      if (last.error) throw new Error(last.error);
      if (last.cancelled) { outcome = "cancelled"; break; }
    }
  } catch (e) {
    if (e.name !== "AbortError") { outcome = "failed"; showError(e); } else outcome = "cancelled";
  } finally {
    if (tracker.stopped) await tracker.stopped;
    tracker = null;
    const secs = job.elapsed();
    job.end(outcome === "cancelled" ? `Tracking cancelled after ${done} of ${total} frames (${secs.toFixed(1)} s).`
      : outcome === "failed" ? `Tracking stopped after ${done} frames.`
        : `Tracked ${done} frames in ${secs.toFixed(1)} s (${(done / Math.max(secs, 1e-3)).toFixed(1)} frames/s).`);
    update({ tracking: null, follow: false });
    touch();
  }
}

/** Stop the tracking: close the stream, tell the server, wait until it has stopped. */
export function cancel() {
  if (!tracker || tracker.stopped) return;
  update((s) => ({ tracking: { ...s.tracking, cancelling: true } }));
  const id = sid();
  tracker.abort.abort();
  tracker.stopped = pending((async () => {
    await api.cancelTracking(id).catch(() => {});
    for (let i = 0; i < 100; i++) { // the server ends the frame it is on first
      const st = await api.videoState(id).catch(() => null);
      if (!st || !st.propagating) return;
      await new Promise((r) => setTimeout(r, 100));
    }
  })());
}

export async function exportVideo(s, format) {
  const job = startJob(`Exporting ${format === "mp4" ? "the overlay video" : "the masks"}`);
  try {
    const blob = await api.exportVideo(s.video.id, format);
    const name = `${s.video.name.replace(/\.[^.]*$/, "") || "video"}_${format}.${format === "mp4" ? "mp4" : "zip"}`;
    const { download } = await import("./zip.js");
    download(blob, name);
    job.end(`Exported ${name} (${(blob.size / 1e6).toFixed(1)} MB).`);
    return name;
  } catch (e) {
    job.end();
    throw e;
  }
}
