// COCO run-length encoded masks as the server sends them ({"size": [H, W], "counts": str}),
// decoded to the masks the page works with: {width, height, data}, data a Uint8Array of H*W,
// row by row, 1 inside the mask. The runs go down the columns (column-major), starting with a
// run of 0s (possibly empty). The algorithm is sam2kit.amg.coco_string_to_counts (pycocotools'
// rleFrString): from the fourth count on, each count is stored as the difference to the count
// two before; each number is written 5 bits at a time, least significant first, as the
// character 48 + value, with 32 added while more groups follow; the last group's bit 16 is the
// sign. Plain number arithmetic (no 32-bit shifts), so counts up to 2^53 are exact. The page
// sends no masks, so it has no encoder.

/** The run lengths of a COCO compressed counts string. */
export function decodeCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, scale = 1, more = true, c = 0;
    while (more) {
      if (p >= s.length) throw new Error("truncated RLE string");
      c = s.charCodeAt(p) - 48;
      x += (c & 0x1f) * scale;
      scale *= 32;
      more = (c & 0x20) !== 0;
      p += 1;
    }
    if (c & 0x10) x -= scale; // the sign bit of the last group
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** {size: [H, W], counts} -> {width, height, data: Uint8Array(H*W) row-major, 0/1}. */
export function decodeMask(rle) {
  const [height, width] = rle.size;
  const counts = typeof rle.counts === "string" ? decodeCounts(rle.counts) : rle.counts;
  const data = new Uint8Array(width * height);
  let pos = 0;
  for (let i = 0; i < counts.length; i++) {
    const n = counts[i];
    if (i % 2 === 1) {
      // a run of 1s from column-major position pos: walk down the column, wrap to the next
      let x = Math.floor(pos / height), y = pos % height;
      for (let k = 0; k < n; k++) {
        data[y * width + x] = 1;
        if (++y === height) { y = 0; x += 1; }
      }
    }
    pos += n;
  }
  if (pos !== width * height) {
    throw new Error(`RLE counts add up to ${pos}, not ${height}x${width} = ${width * height} pixels`);
  }
  return { width, height, data };
}

/** Area in pixels and bounding box [x, y, w, h] (null when empty) of a mask. */
export function maskStats(mask) {
  const { width, height, data } = mask;
  let area = 0, x0 = width, y0 = height, x1 = -1, y1 = -1;
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) {
      if (data[row + x]) {
        area += 1;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
  }
  return { area, bbox: area ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : null };
}

/** The union of masks of one size (a new mask). */
export function unionMasks(masks, width, height) {
  const data = new Uint8Array(width * height);
  for (const m of masks) {
    for (let i = 0; i < data.length; i++) data[i] |= m.data[i];
  }
  return { width, height, data };
}
