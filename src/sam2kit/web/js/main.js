// The page's wiring: opening files, the canvas's mouse, the controls and the keyboard call the
// modes (picture.js, video.js) and the document (doc.js); the view redraws from the state.

import * as api from "./api.js";
import { pending, workInFlight } from "./cache.js";
import * as D from "./doc.js";
import { exportPicture } from "./exporting.js";
import * as picture from "./picture.js";
import * as state from "./state.js";
import { commit, getState, showError, update } from "./state.js";
import * as video from "./video.js";
import { fit, pointer, render } from "./view.js";

const $ = (id) => document.getElementById(id);
const VIDEO_NAME = /\.(mp4|m4v|mov|mkv|webm|avi|mpe?g|ogv|wmv|flv|ts|mts|3gp)$/i;
const PICTURE_NAME = /\.(png|jpe?g|webp|bmp|tiff?|gif)$/i;
const mode = () => (getState().mode === "video" ? video : picture);

// ---- opening ------------------------------------------------------------------------------

/** Run a user's action: its failure is shown in plain words, prefixed with `what`. */
async function run(what, fn) {
  try {
    update({ error: null });
    return await pending(Promise.resolve().then(fn));
  } catch (e) {
    showError(what ? `${what}: ${e.message}` : e);
    return undefined;
  }
}

function guessKind(file) {
  if (file.type.startsWith("video/") || VIDEO_NAME.test(file.name)) return "video";
  if (file.type.startsWith("image/") || PICTURE_NAME.test(file.name)) return "picture";
  return null;
}

async function openFile(file) {
  const limit = getState().health?.limits?.max_upload_mb;
  await run(`Cannot open ${file.name}`, async () => {
    if (limit && file.size > limit * 1e6) {
      throw new Error(`it is ${(file.size / 1e6).toFixed(file.size < 1e7 ? 1 : 0)} MB, over this server's upload limit of ${limit} MB `
        + "(sam2kit serve --max-upload-mb); use a shorter or smaller file, or put it under the server's --media-root.");
    }
    const kind = guessKind(file);
    if (kind === "video") return video.open({ file }, file.name);
    try {
      return await picture.open({ file }, file.name);
    } catch (e) {
      if (kind === null && e.status === 415) return video.open({ file }, file.name); // not a picture: a video?
      throw e;
    }
  });
}

function openServerFile(path) {
  const entry = (getState().media || []).find((e) => e.path === path);
  const isPicture = entry?.kind === "file" && PICTURE_NAME.test(path);
  return run(`Cannot open ${path}`, () => (isPicture ? picture.open({ path }, path) : video.open({ path }, path)));
}

// ---- the canvas ---------------------------------------------------------------------------

function toPicture(e) {
  const f = fit(getState());
  const rect = $("canvas").getBoundingClientRect();
  const x = ((e.clientX - rect.left) / rect.width) * f.width;
  const y = ((e.clientY - rect.top) / rect.height) * f.height;
  const round = (v, max) => Math.round(Math.min(max, Math.max(0, v)) * 100) / 100;
  return [round(x, f.width), round(y, f.height), f];
}

let press = null;

function wireCanvas() {
  const canvas = $("canvas");
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    if (e.button > 2 || getState().mode === "empty") return;
    const [x, y] = toPicture(e);
    press = { x, y, cx: e.clientX, cy: e.clientY, button: e.button, alt: e.altKey };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    const [x, y] = toPicture(e);
    if (!press) return picture.hover(x, y);
    if (pointer.drag || Math.hypot(e.clientX - press.cx, e.clientY - press.cy) > 6) {
      pointer.drag = [press.x, press.y, x, y];
      state.touch();
    }
  });
  canvas.addEventListener("pointerup", (e) => {
    if (!press) return;
    const [x, y, f] = toPicture(e);
    const p = press, drag = pointer.drag;
    press = null;
    pointer.drag = null;
    const m = mode();
    if (drag) {
      const b = [Math.min(p.x, x), Math.min(p.y, y), Math.max(p.x, x), Math.max(p.y, y)];
      if (b[2] - b[0] >= 2 && b[3] - b[1] >= 2) m.box(b, e.timeStamp);
      state.touch();
      return;
    }
    const label = p.button === 2 || p.alt ? 0 : 1;
    m.click(p.x, p.y, label, e.timeStamp, 8 / f.scale);
  });
  canvas.addEventListener("pointercancel", () => { press = null; pointer.drag = null; state.touch(); });
  new ResizeObserver(() => state.touch()).observe($("stage"));
}

// ---- objects and history ------------------------------------------------------------------

function changeDoc(doc) {
  commit(doc);
  mode().sync();
}

function newObject() {
  if (getState().mode === "empty") return;
  changeDoc(D.addObject(getState().doc)[0]);
}

function deleteObject(id) {
  if (getState().tracking || id === null || id === undefined) return;
  changeDoc(D.removeObject(getState().doc, id));
}

function toggleHidden(id) {
  const obj = D.objectById(getState().doc, id);
  if (obj) commit(D.changeObject(getState().doc, id, { hidden: !obj.hidden }));
}

function step(delta) {
  const s = getState();
  if (!s.video) return;
  update({ playing: false });
  video.seek(s.frame + delta);
}

function history(fn) {
  if (getState().tracking || !fn()) return;
  mode().sync();
}

function selectNext(delta) {
  const { objects, selected } = getState().doc;
  if (!objects.length) return;
  const i = objects.findIndex((o) => o.id === selected);
  const next = objects[(i + delta + objects.length) % objects.length];
  state.replaceDoc(D.select(getState().doc, next.id));
}

function wireObjects() {
  const list = $("object-list");
  list.addEventListener("click", (e) => {
    const li = e.target.closest("li");
    if (!li) return;
    const id = Number(li.dataset.objectId);
    const action = e.target.dataset.action;
    if (action === "delete") return deleteObject(id);
    if (action === "show") return toggleHidden(id);
    if (getState().doc.selected !== id) state.replaceDoc(D.select(getState().doc, id));
  });
  list.addEventListener("change", (e) => {
    if (e.target.dataset.action !== "rename") return;
    const id = Number(e.target.dataset.objectId);
    const name = e.target.value.trim() || `Object ${id}`;
    commit(D.changeObject(getState().doc, id, { name }));
  });
  list.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target.dataset.action === "rename") e.target.blur(); });
}

// ---- the controls -------------------------------------------------------------------------

function everythingParams() {
  return {
    points_per_side: Number($("grid").value) || 16,
    pred_iou_thresh: Number($("iou-thresh").value),
    stability_score_thresh: Number($("stability-thresh").value),
  };
}

async function doExport() {
  const s = getState();
  const format = $("export-format").value;
  await run("Export failed", async () => {
    const name = s.mode === "video" ? await video.exportVideo(s, format) : await exportPicture(s, format);
    if (s.mode === "picture") update({ message: `Exported ${name}.` });
  });
}

function track() {
  const n = Number($("max-frames").value);
  run("Tracking failed", () => video.track($("direction").value, n > 0 ? Math.floor(n) : null));
}

function wireControls() {
  const on = (id, ev, fn) => $(id).addEventListener(ev, fn);
  on("file-input", "change", (e) => { const f = e.target.files[0]; e.target.value = ""; if (f) openFile(f); });
  on("sample-photo", "click", () => run("Cannot open the sample photo", () => picture.open({ sample: "photo" }, "sample photo")));
  on("sample-video", "click", () => run("Cannot open the sample video", () => video.open({ sample: "video" }, "sample video")));
  on("media-open", "click", () => openServerFile($("media-select").value));
  on("undo", "click", () => history(state.undo));
  on("redo", "click", () => history(state.redo));
  on("clear", "click", () => (getState().mode === "video" ? video.clearAll() : changeDoc({ ...getState().doc, objects: [], prompts: {}, selected: null })));
  on("export", "click", doExport);
  on("new-object", "click", newObject);
  on("show-masks", "change", (e) => update({ showMasks: e.target.checked }));
  on("candidates", "click", (e) => { const b = e.target.closest("button"); if (b) picture.choose(Number(b.dataset.candidate)); });
  on("everything", "click", () => run("Segment everything failed", () => picture.segmentEverything(everythingParams())));
  on("everything-leave", "click", picture.leaveEverything);
  on("track", "click", track);
  on("cancel", "click", video.cancel);
  on("play", "click", video.togglePlay);
  on("prev", "click", () => step(-1));
  on("next", "click", () => step(1));
  on("frame-slider", "input", (e) => { update({ playing: false }); video.seek(Number(e.target.value)); });
  on("frame-number", "change", (e) => { update({ playing: false }); video.seek(Number(e.target.value)); });
  on("help-button", "click", () => update({ help: true }));
  on("help", "close", () => update({ help: false }));
  on("error-close", "click", () => update({ error: null }));
  on("token", "change", (e) => { api.setToken(e.target.value.trim()); loadServerInfo(); });
  wireDrop();
}

function wireDrop() {
  let depth = 0;
  const hint = $("drop-hint");
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth += 1; hint.hidden = false; });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) hint.hidden = true; });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    hint.hidden = true;
    const file = e.dataTransfer?.files?.[0];
    if (file) openFile(file);
  });
}

// ---- the keyboard -------------------------------------------------------------------------

export const SHORTCUTS = [
  ["O", "open a picture or a video", () => $("file-input").click()],
  ["N", "new object (the next clicks go to it)", newObject],
  ["[ ]", "select the previous / next object", null],
  ["H", "hide or show the selected object", () => toggleHidden(getState().doc.selected)],
  ["Delete", "delete the selected object", () => deleteObject(getState().doc.selected)],
  ["M", "show or hide every mask", () => update((s) => ({ showMasks: !s.showMasks }))],
  ["Ctrl+Z", "undo", () => history(state.undo)],
  ["Ctrl+Shift+Z, Ctrl+Y", "redo", () => history(state.redo)],
  ["1 2 3", "pick a candidate mask (pictures)", null],
  ["E", "segment everything (pictures)", () => $("everything").click()],
  ["Space", "play or pause (videos)", () => video.togglePlay()],
  ["← →", "previous / next frame; with Shift: 10 frames", null],
  ["Home End", "first / last frame", null],
  ["T", "track from this frame (videos)", () => $("track").click()],
  ["S", "export", () => $("export").click()],
  ["Esc", "cancel tracking, leave segment everything, close a panel", null],
  ["?", "this help", () => update((s) => ({ help: !s.help }))],
];

function onKey(e) {
  const t = e.target;
  const typing = (t.tagName === "INPUT" && !["checkbox", "range", "button"].includes(t.type))
    || t.tagName === "SELECT" || t.tagName === "TEXTAREA";
  if (typing && e.key !== "Escape") return;
  const s = getState(), ctrl = e.ctrlKey || e.metaKey, k = e.key;
  const byKey = (name) => SHORTCUTS.find(([keys]) => keys === name)[2]();
  let handled = true;
  if (ctrl && k.toLowerCase() === "z") byKey(e.shiftKey ? "Ctrl+Shift+Z, Ctrl+Y" : "Ctrl+Z");
  else if (ctrl && k.toLowerCase() === "y") byKey("Ctrl+Shift+Z, Ctrl+Y");
  else if (ctrl || e.altKey) handled = false;
  else if (k === "Escape") {
    if (s.tracking) video.cancel();
    else if (s.everything) picture.leaveEverything();
    else if (pointer.drag) { pointer.drag = null; press = null; state.touch(); } else handled = false;
  } else if (k === "ArrowLeft" || k === "ArrowRight") step((k === "ArrowLeft" ? -1 : 1) * (e.shiftKey ? 10 : 1));
  else if (k === "Home" || k === "End") step(k === "Home" ? -Infinity : Infinity);
  else if (k === "[" || k === "]") selectNext(k === "[" ? -1 : 1);
  else if (["1", "2", "3"].includes(k) && s.mode === "picture") picture.choose(Number(k) - 1);
  else if (k === " " && s.mode === "video") byKey("Space");
  else if (k === "Delete" || k === "Backspace") byKey("Delete");
  else {
    const hit = SHORTCUTS.find(([keys, , fn]) => fn && keys.length === 1 && keys.toLowerCase() === k.toLowerCase());
    if (hit && !(s.mode === "empty" && "NHMTSE".includes(hit[0]))) hit[2](); else handled = false;
  }
  if (handled) e.preventDefault();
}

function renderShortcuts() {
  $("shortcut-rows").replaceChildren(...SHORTCUTS.map(([keys, what]) => {
    const tr = document.createElement("tr");
    const a = document.createElement("td"), b = document.createElement("td");
    a.innerHTML = keys.split(", ").map((k) => `<kbd>${k}</kbd>`).join(" or ");
    b.textContent = what;
    tr.append(a, b);
    return tr;
  }));
}

// ---- start --------------------------------------------------------------------------------

async function loadServerInfo() {
  try {
    const [health, media] = await Promise.all([api.health(), api.media()]);
    update({ health, media: media.entries.length ? media.entries : null });
  } catch (e) {
    showError(e);
  }
}

let inflight = 0;
api.watchInflight((n) => { inflight = n; });

/** For automation (tests): the page has no request, decode or redraw outstanding. */
window.sam2kit = {
  settled: () => inflight === 0 && workInFlight() === 0 && !state.isScheduled(),
  latencies: () => [...picture.latencies, ...video.latencies],
  lastStream: () => [...video.lastStream], // the NDJSON lines of the last tracking, as received
};

wireCanvas();
wireObjects();
wireControls();
renderShortcuts();
document.addEventListener("keydown", onKey);
window.addEventListener("pagehide", () => { const v = getState().video; if (v) api.closeVideoOnExit(v.id); });
state.subscribe(render);
setInterval(() => { if (getState().jobs.length) state.touch(); }, 250);
loadServerInfo();
