// The document: objects and their prompts, as pure functions that return a new document.
//
//   doc = {objects: [{id, name, color, hidden, choice, rle}], selected: id | null,
//          prompts: {"FRAME:ID": {points: [[x, y, label], ...], box: [x0, y0, x1, y1] | null}}}
//
// Coordinates are pixels of the original picture or frame. A picture uses frame 0. `choice`
// is the candidate mask picked for a picture object (null: the best one); `rle` is set for an
// object added from "segment everything" (its mask is fixed, it has no prompts).

import { colorFor } from "./draw.js";

export const key = (frame, id) => `${frame}:${id}`;
export const parseKey = (k) => k.split(":").map(Number);

export function nextId(doc) {
  return doc.objects.reduce((m, o) => Math.max(m, o.id), 0) + 1;
}

export function objectById(doc, id) { return doc.objects.find((o) => o.id === id) || null; }

/** A document with a new object (selected); returns [doc, id]. */
export function addObject(doc, extra = {}) {
  const id = nextId(doc);
  const obj = { id, name: `Object ${id}`, color: colorFor(id), hidden: false, choice: null, rle: null, ...extra };
  return [{ ...doc, objects: [...doc.objects, obj], selected: id }, id];
}

export function removeObject(doc, id) {
  const objects = doc.objects.filter((o) => o.id !== id);
  const prompts = Object.fromEntries(Object.entries(doc.prompts).filter(([k]) => parseKey(k)[1] !== id));
  let selected = doc.selected;
  if (selected === id) selected = objects.length ? objects[objects.length - 1].id : null;
  return { ...doc, objects, prompts, selected };
}

export function changeObject(doc, id, change) {
  return { ...doc, objects: doc.objects.map((o) => (o.id === id ? { ...o, ...change } : o)) };
}

export const select = (doc, id) => ({ ...doc, selected: id });

export function promptsOf(doc, frame, id) {
  return doc.prompts[key(frame, id)] || { points: [], box: null };
}

function setPrompts(doc, frame, id, prompts) {
  const all = { ...doc.prompts };
  if (prompts.points.length || prompts.box) all[key(frame, id)] = prompts;
  else delete all[key(frame, id)];
  return { ...doc, prompts: all };
}

/** A click [x, y, label] for object `id` on `frame` (the object's chosen candidate resets). */
export function addPoint(doc, frame, id, point) {
  const p = promptsOf(doc, frame, id);
  return changeObject(setPrompts(doc, frame, id, { ...p, points: [...p.points, point] }), id, { choice: null });
}

export function removePoint(doc, frame, id, index) {
  const p = promptsOf(doc, frame, id);
  const points = p.points.filter((_, i) => i !== index);
  return changeObject(setPrompts(doc, frame, id, { ...p, points }), id, { choice: null });
}

export function setBox(doc, frame, id, box) {
  const p = promptsOf(doc, frame, id);
  return changeObject(setPrompts(doc, frame, id, { ...p, box }), id, { choice: null });
}

/** The index of the point of (frame, id) within `radius` pixels of (x, y), or -1. */
export function pointNear(doc, frame, id, x, y, radius) {
  const { points } = promptsOf(doc, frame, id);
  let best = -1, bestD = radius * radius;
  points.forEach(([px, py], i) => {
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d <= bestD) { best = i; bestD = d; }
  });
  return best;
}

/** Every (frame, id) with prompts: [[frame, id, prompts], ...]. */
export function allPrompts(doc) {
  return Object.entries(doc.prompts).map(([k, p]) => [...parseKey(k), p]);
}
