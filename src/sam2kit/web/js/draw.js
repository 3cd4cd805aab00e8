// Drawing on canvases: the picture or frame with its masks (the main canvas, one pixel per
// pixel of the original picture, scaled to the window by CSS), and the prompts (points, box,
// the box being dragged) on the overlay canvas above it, which has the size it is shown at.
//
// A mask is drawn as its colour at FILL_ALPHA over the picture, with the mask's own border
// pixels (those with a 4-neighbour outside the mask or the picture) in the opaque colour,
// `outline` pixels thick; larger masks first, so that small ones stay visible. This is how
// sam2kit draws its overlay pictures (sam2kit.outputs.tint), which the page's tests use.

export const FILL_ALPHA = 115; // of 255: 0.45, as sam2kit's own overlays (sam2kit.outputs.tint)
// Object n (1, 2, ...) has the colour sam2kit's overlays and the server's mp4 export give the
// n-th object (sam2kit.outputs.colour): matplotlib's tab10, then golden-ratio hues.
const TAB10 = [
  [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
  [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
];

/** The colour [r, g, b] of object n (1, 2, ...). */
export function colorFor(n) {
  const k = n - 1;
  if (k >= 0 && k < TAB10.length) return TAB10[k];
  return hsvToRgb((k * 0.618033988749895) % 1, 0.75, 0.95);
}

function hsvToRgb(h, s, v) { // as Python's colorsys.hsv_to_rgb
  const i = Math.floor(h * 6), f = h * 6 - i;
  const p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
  const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
  return rgb.map((c) => Math.round(c * 255));
}

export const css = ([r, g, b], a = 1) => `rgba(${r}, ${g}, ${b}, ${a})`;

/** The border of a mask, `thickness` pixels: a Uint8Array, 1 on border pixels. */
export function maskBorder(mask, thickness = 1) {
  const { width: w, height: h, data } = mask;
  let inner = data;
  for (let t = 0; t < thickness; t++) { // erode (4-neighbours; outside the picture is outside)
    const next = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        next[i] = inner[i] && x > 0 && inner[i - 1] && x < w - 1 && inner[i + 1]
          && y > 0 && inner[i - w] && y < h - 1 && inner[i + w] ? 1 : 0;
      }
    }
    inner = next;
  }
  const border = new Uint8Array(w * h);
  for (let i = 0; i < border.length; i++) border[i] = data[i] && !inner[i] ? 1 : 0;
  return border;
}

/** A canvas of the mask's size: the mask in `color` (fill alpha `alpha`, opaque border). */
export function maskLayer(mask, color, { alpha = FILL_ALPHA, outline = 1 } = {}) {
  const { width: w, height: h, data } = mask;
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const px = image.data;
  const border = outline > 0 ? maskBorder(mask, outline) : null;
  const [r, g, b] = color;
  for (let i = 0; i < data.length; i++) {
    if (!data[i]) continue;
    const o = i * 4;
    px[o] = r; px[o + 1] = g; px[o + 2] = b;
    px[o + 3] = border && border[i] ? 255 : alpha;
  }
  ctx.putImageData(image, 0, 0);
  return canvas;
}

/** The main canvas: `image` (ImageBitmap or canvas) then each layer, at the picture's size. */
export function drawScene(canvas, image, layers, width, height) {
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  if (image) ctx.drawImage(image, 0, 0, width, height);
  for (const layer of layers) ctx.drawImage(layer, 0, 0);
}

/** The overlay: points (green foreground, red background), boxes, the box being dragged.
 *  `scale` is overlay pixels per picture pixel. */
export function drawOverlay(overlay, { points = [], boxes = [], drag = null, scale = 1 }) {
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  const dpr = window.devicePixelRatio || 1;
  ctx.lineWidth = 2 * dpr;
  for (const { box, color } of boxes) {
    ctx.strokeStyle = css(color);
    ctx.setLineDash([]);
    ctx.strokeRect(box[0] * scale, box[1] * scale, (box[2] - box[0]) * scale, (box[3] - box[1]) * scale);
  }
  if (drag) {
    ctx.strokeStyle = "white";
    ctx.setLineDash([6 * dpr, 4 * dpr]);
    const [x0, y0, x1, y1] = drag;
    ctx.strokeRect(Math.min(x0, x1) * scale, Math.min(y0, y1) * scale,
      Math.abs(x1 - x0) * scale, Math.abs(y1 - y0) * scale);
    ctx.setLineDash([]);
  }
  const radius = 5 * dpr;
  for (const [x, y, label] of points) {
    ctx.beginPath();
    ctx.arc(x * scale, y * scale, radius, 0, 2 * Math.PI);
    ctx.fillStyle = label ? "#22c55e" : "#ef4444";
    ctx.fill();
    ctx.strokeStyle = "white";
    ctx.stroke();
  }
}

/** A small picture of `image` with one mask layer over it, into a thumbnail canvas. */
export function drawThumbnail(canvas, image, layer, width, height) {
  const scale = Math.min(canvas.width / width, canvas.height / height);
  const w = width * scale, h = height * scale;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const x = (canvas.width - w) / 2, y = (canvas.height - h) / 2;
  if (image) ctx.drawImage(image, x, y, w, h);
  if (layer) ctx.drawImage(layer, x, y, w, h);
}

/** A PNG Blob of a mask: grey 0 outside, 255 inside (the picture's size). */
export function maskPng(mask) {
  const canvas = document.createElement("canvas");
  canvas.width = mask.width;
  canvas.height = mask.height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(mask.width, mask.height);
  for (let i = 0; i < mask.data.length; i++) {
    const v = mask.data[i] ? 255 : 0;
    image.data[i * 4] = v; image.data[i * 4 + 1] = v; image.data[i * 4 + 2] = v; image.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  return canvasBlob(canvas);
}

export function canvasBlob(canvas, type = "image/png") {
  return new Promise((resolve, reject) => canvas.toBlob(
    (blob) => (blob ? resolve(blob) : reject(new Error("the browser could not encode the PNG"))), type));
}
