// What a picture's objects export to, made in the page: a zip of mask PNGs (8-bit grey, 0 and
// 255, the picture's size), COCO JSON (compressed RLE, as `sam2kit image` writes), and a
// cut-out: the picture's pixels inside the shown objects' masks, transparent elsewhere,
// cropped to them. Videos export on the server (GET /api/videos/{id}/export).

import * as api from "./api.js";
import { maskOf } from "./cache.js";
import * as D from "./doc.js";
import { canvasBlob, maskPng } from "./draw.js";
import { maskStats, unionMasks } from "./rle.js";
import { download, makeZip } from "./zip.js";
import { objectMasks } from "./picture.js";

const stem = (name) => (name.replace(/\.[^.]*$/, "") || "picture").replace(/[^\w.-]+/g, "_");
const slug = (name) => name.trim().replace(/[^\w.-]+/g, "_").slice(0, 40) || "object";

export const PICTURE_FORMATS = [
  ["masks", "Mask PNGs (zip)"],
  ["coco", "COCO JSON"],
  ["cutout", "Cut-out PNG"],
];

export const VIDEO_FORMATS = [
  ["davis", "DAVIS PNGs (zip)"],
  ["masks", "Per-object PNGs (zip)"],
  ["mp4", "Overlay mp4"],
];

/** Make and download the export `format` of the picture's objects; returns the file name. */
export async function exportPicture(s, format) {
  const items = objectMasks(s);
  if (!items.length) throw new Error("Nothing to export yet: click an object first.");
  const base = stem(s.picture.name);
  if (format === "masks") {
    const files = [];
    for (const { obj, m } of items) {
      const png = await maskPng(maskOf(m.rle));
      files.push({ name: `${base}_${String(obj.id).padStart(2, "0")}_${slug(obj.name)}.png`,
        data: new Uint8Array(await png.arrayBuffer()) });
    }
    return save(makeZip(files), `${base}_masks.zip`);
  }
  if (format === "coco") {
    const blob = new Blob([JSON.stringify(coco(s, items), null, 1)], { type: "application/json" });
    return save(blob, `${base}_coco.json`);
  }
  if (format === "cutout") return save(await cutout(s, items.filter(({ obj }) => !obj.hidden)), `${base}_cutout.png`);
  throw new Error(`unknown export format ${format}`);
}

function save(blob, name) {
  download(blob, name);
  return name;
}

/** COCO-style JSON of the objects: one annotation per object (its id, name and prompts too). */
export function coco(s, items) {
  const { picture } = s;
  return {
    info: { description: "sam2kit page export", date_created: new Date().toISOString() },
    images: [{ id: 1, file_name: picture.name, width: picture.width, height: picture.height }],
    categories: [{ id: 1, name: "object" }],
    annotations: items.map(({ obj, m }) => {
      const { area, bbox } = maskStats(maskOf(m.rle));
      const p = D.promptsOf(s.doc, 0, obj.id);
      const ann = { id: obj.id, image_id: 1, category_id: 1, iscrowd: 0, segmentation: m.rle, area, bbox: bbox || [0, 0, 0, 0], name: obj.name };
      if (m.response) {
        ann.score = m.response.masks[m.index].score;
        ann.point_coords = p.points.map(([x, y]) => [x, y]);
        ann.point_labels = p.points.map((q) => q[2]);
        if (p.box) ann.box = p.box;
      }
      return ann;
    }),
  };
}

async function cutout(s, items) {
  if (!items.length) throw new Error("Every object is hidden: show the ones to cut out.");
  const { width, height } = s.picture;
  const union = unionMasks(items.map(({ m }) => maskOf(m.rle)), width, height);
  const { bbox } = maskStats(union);
  if (!bbox) throw new Error("The masks are empty: nothing to cut out.");
  const source = await createImageBitmap(await api.picture(s.picture.id, 100)); // least loss
  const canvas = document.createElement("canvas");
  [canvas.width, canvas.height] = [bbox[2], bbox[3]];
  const ctx = canvas.getContext("2d");
  ctx.drawImage(source, -bbox[0], -bbox[1]);
  const image = ctx.getImageData(0, 0, bbox[2], bbox[3]);
  for (let y = 0; y < bbox[3]; y++) {
    for (let x = 0; x < bbox[2]; x++) {
      if (!union.data[(y + bbox[1]) * width + x + bbox[0]]) image.data[(y * bbox[2] + x) * 4 + 3] = 0;
    }
  }
  ctx.putImageData(image, 0, 0);
  return canvasBlob(canvas);
}
