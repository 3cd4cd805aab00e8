// The view: everything on screen is redrawn from the state (render), never changed elsewhere.
// The main canvas is redrawn only when what it shows changed (picture, frame, masks).

import * as D from "./doc.js";
import { css, drawOverlay, drawScene, drawThumbnail } from "./draw.js";
import { layerOf } from "./cache.js";
import { PICTURE_FORMATS, VIDEO_FORMATS } from "./exporting.js";
import * as picture from "./picture.js";
import * as video from "./video.js";
import { update } from "./state.js";

const $ = (id) => document.getElementById(id);
let lastScene = null, lastObjects = null, lastCandidates = null, lastFormats = null, lastMedia = null;

/** Interaction state that is not part of the page's state: the box being dragged. */
export const pointer = { drag: null };

/** The size and scale the picture is shown at: {width, height, scale} (scale: CSS px per pixel). */
export function fit(s) {
  const size = s.mode === "picture" ? s.picture : s.mode === "video" ? s.video : null;
  if (!size) return null;
  const stage = $("stage");
  const w = Math.max(50, stage.clientWidth - 16), h = Math.max(50, stage.clientHeight - 16);
  const scale = Math.min(w / size.width, h / size.height);
  return { width: size.width, height: size.height, scale };
}

export function render(s) {
  document.body.dataset.mode = s.mode;
  $("empty-note").hidden = s.mode !== "empty";
  $("canvas-box").hidden = s.mode === "empty";
  $("player").hidden = s.mode !== "video";
  renderStage(s);
  renderObjects(s);
  renderCandidates(s);
  renderTools(s);
  renderPlayer(s);
  renderStatus(s);
  const help = $("help");
  if (s.help && !help.open) help.showModal();
  if (!s.help && help.open) help.close();
}

function renderStage(s) {
  const size = s.mode === "picture" ? s.picture : s.video;
  if (size) $("stage").style.setProperty("--ar", `${size.width} / ${size.height}`); // (narrow windows)
  const f = fit(s);
  if (!f) return;
  const box = $("canvas-box"), canvas = $("canvas"), overlay = $("overlay");
  const cssW = Math.round(f.width * f.scale), cssH = Math.round(f.height * f.scale);
  box.style.width = `${cssW}px`;
  box.style.height = `${cssH}px`;
  const dpr = window.devicePixelRatio || 1;
  if (overlay.width !== Math.round(cssW * dpr) || overlay.height !== Math.round(cssH * dpr)) {
    overlay.width = Math.round(cssW * dpr);
    overlay.height = Math.round(cssH * dpr);
  }
  const outline = Math.max(1, Math.round(1 / (f.scale * dpr)));
  const mode = s.mode === "picture" ? picture : video;
  const image = s.mode === "picture" ? s.picture.bitmap : video.frameBitmap(s.frame);
  const { layers, keys } = s.showMasks ? mode.layers(s, outline) : { layers: [], keys: [] };
  if (image) {
    const scene = [image, f.width, f.height, ...layers];
    if (!lastScene || scene.length !== lastScene.length || scene.some((x, i) => x !== lastScene[i])) {
      drawScene(canvas, image, layers, f.width, f.height);
      lastScene = scene;
      canvas.dataset.frame = s.mode === "video" ? String(s.frame) : "";
    }
    const ms = mode.drawn(keys);
    if (ms !== null) update({ message: `Mask in ${Math.round(ms)} ms (click to mask on screen).` });
  }
  drawOverlay(overlay, { ...prompts(s), drag: pointer.drag, scale: (overlay.width / f.width) });
}

function prompts(s) {
  const frame = s.mode === "video" ? s.frame : 0;
  const points = [], boxes = [];
  for (const obj of s.doc.objects) {
    if (obj.hidden) continue;
    const p = D.promptsOf(s.doc, frame, obj.id);
    points.push(...p.points);
    if (p.box) boxes.push({ box: p.box, color: obj.color });
  }
  return { points, boxes };
}

function renderObjects(s) {
  const list = $("object-list");
  const sig = JSON.stringify([s.doc.objects, s.doc.selected]);
  if (sig === lastObjects) return;
  lastObjects = sig;
  const focused = document.activeElement?.dataset?.objectId;
  const items = s.doc.objects.map((obj) => {
    const li = document.createElement("li");
    li.dataset.testid = "object-item";
    li.setAttribute("data-testid", "object-item");
    li.dataset.objectId = obj.id;
    li.className = (obj.id === s.doc.selected ? "selected " : "") + (obj.hidden ? "hidden-object" : "");
    li.setAttribute("aria-selected", String(obj.id === s.doc.selected));
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = css(obj.color);
    const name = document.createElement("input");
    name.type = "text";
    name.className = "name";
    name.value = obj.name;
    name.dataset.objectId = obj.id;
    name.dataset.action = "rename";
    name.setAttribute("aria-label", `Name of object ${obj.id}`);
    const show = document.createElement("input");
    show.type = "checkbox";
    show.checked = !obj.hidden;
    show.dataset.action = "show";
    show.setAttribute("aria-label", `Show ${obj.name}`);
    show.title = "Show or hide (H)";
    const del = document.createElement("button");
    del.type = "button";
    del.textContent = "Delete";
    del.dataset.action = "delete";
    del.setAttribute("aria-label", `Delete ${obj.name}`);
    del.title = "Delete (Delete key)";
    li.append(swatch, name, show, del);
    if (obj.rle) li.title = "From segment everything";
    return li;
  });
  list.replaceChildren(...items);
  if (focused) list.querySelector(`input.name[data-object-id="${focused}"]`)?.focus();
}

function renderCandidates(s) {
  if (s.mode !== "picture") return;
  const cands = picture.candidates(s);
  const sig = JSON.stringify(cands.map((c) => [c.rle.counts, c.score, c.chosen])) + s.picture.id;
  if (sig === lastCandidates) return;
  lastCandidates = sig;
  const box = $("candidates");
  box.replaceChildren(...cands.map((c, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.candidate = i;
    b.setAttribute("data-testid", "candidate");
    b.className = c.chosen ? "chosen" : "";
    b.setAttribute("aria-pressed", String(c.chosen));
    b.setAttribute("aria-label", `Candidate ${i + 1}, score ${c.score.toFixed(3)}`);
    const thumb = document.createElement("canvas");
    thumb.width = 96;
    thumb.height = 72;
    drawThumbnail(thumb, s.picture.bitmap, layerOf(c.rle, c.color), s.picture.width, s.picture.height);
    const label = document.createElement("span");
    label.className = "score";
    label.textContent = `${i + 1}: ${c.score.toFixed(3)}`;
    b.append(thumb, label);
    return b;
  }));
}

function renderTools(s) {
  const tracking = !!s.tracking, running = s.jobs.length > 0;
  $("undo").disabled = !s.past.length || tracking;
  $("redo").disabled = !s.future.length || tracking;
  $("clear").disabled = !s.doc.objects.length || tracking;
  $("new-object").disabled = s.mode === "empty";
  $("show-masks").checked = s.showMasks;
  const formats = s.mode === "video" ? VIDEO_FORMATS : PICTURE_FORMATS;
  if (formats !== lastFormats) {
    lastFormats = formats;
    $("export-format").replaceChildren(...formats.map(([v, text]) => new Option(text, v)));
  }
  $("export").disabled = s.mode === "empty" || tracking;
  $("everything").disabled = s.mode !== "picture" || running;
  $("everything-leave").hidden = !s.everything;
  $("track").disabled = s.mode !== "video" || tracking || !Object.keys(s.doc.prompts).length;
  $("cancel").disabled = !tracking || s.tracking.cancelling;
  const progress = $("progress");
  if (s.tracking) {
    progress.max = Math.max(1, s.tracking.total);
    progress.value = s.tracking.done;
  }
  if (s.media !== lastMedia) {
    lastMedia = s.media;
    $("media-group").hidden = !s.media?.length;
    $("media-select").replaceChildren(...(s.media || []).map((e) => new Option(
      e.kind === "frames" ? `${e.path}/ (${e.frames} frames)` : e.path, e.path)));
  }
}

const clock = (t) => `${Math.floor(t / 60)}:${(t % 60).toFixed(2).padStart(5, "0")}`;

function renderPlayer(s) {
  if (s.mode !== "video") return;
  const { numFrames, fps } = s.video;
  const slider = $("frame-slider"), number = $("frame-number");
  slider.max = String(numFrames - 1);
  if (Number(slider.value) !== s.frame) slider.value = String(s.frame);
  number.max = String(numFrames - 1);
  if (document.activeElement !== number) number.value = String(s.frame);
  $("play").textContent = s.playing ? "Pause" : "Play";
  $("frame-info").textContent = `of ${numFrames - 1}`
    + (fps ? ` · ${clock(s.frame / fps)} / ${clock((numFrames - 1) / fps)}` : "");
  $("frame-slider").setAttribute("aria-valuetext", `frame ${s.frame} of ${numFrames - 1}`);
}

function renderStatus(s) {
  let text = s.message;
  if (s.jobs.length) {
    const job = s.jobs[s.jobs.length - 1];
    const secs = ((performance.now() - job.started) / 1000).toFixed(1);
    const part = job.total ? ` ${job.done}/${job.total}` : "";
    text = `${job.text}…${part} (${secs} s)${s.jobs.length > 1 ? ` and ${s.jobs.length - 1} more` : ""}`;
  }
  $("status").textContent = text;
  $("error").hidden = !s.error;
  $("error-text").textContent = s.error || "";
  const h = s.health;
  $("server-info").textContent = h ? `${h.model} at ${h.image_size} px on ${h.device}` : "";
}
