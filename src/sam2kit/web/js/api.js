// The server's API (sam2kit serve, OpenAPI at /docs): one function per call. Failures become an
// ApiError whose message is plain words for the page to show: the server's own {"error": ...}
// (which names the problem and the fix), or what a missing answer means.

const TOKEN_KEY = "sam2kit-token";
let token = sessionStorage.getItem(TOKEN_KEY);
let inflight = 0;
const watchers = new Set();

export class ApiError extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

/** fn(n) is called with the number of requests in flight whenever it changes. */
export function watchInflight(fn) { watchers.add(fn); }
function changed(delta) { inflight += delta; for (const fn of watchers) fn(inflight); }

export function setToken(value) {
  token = value || null;
  if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
}

const GONE = "The server is not answering: is `sam2kit serve` still running? Start it again, then reload this page.";

async function errorOf(res) {
  let message = "";
  try {
    const body = await res.json();
    message = body.error || body.detail || "";
  } catch { /* not JSON: a proxy's page, say */ }
  if (res.status === 401) {
    return new ApiError("This server needs a token (it was started with --token): enter it under Server in the side panel, then try again.", 401);
  }
  if (!message) message = `The server answered ${res.status} ${res.statusText}.`;
  return new ApiError(message.charAt(0).toUpperCase() + message.slice(1), res.status);
}

/** fetch with the token; 503 (busy) retried after Retry-After up to 3 times; the Response. */
async function send(method, path, { json, form, signal } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  changed(+1);
  try {
    for (let attempt = 0; ; attempt++) {
      let res;
      try {
        res = await fetch(path, { method, headers, body, signal });
      } catch (e) {
        if (e.name === "AbortError") throw e;
        throw new ApiError(GONE, 0);
      }
      if (res.status === 503 && attempt < 3) {
        const wait = Math.min(10, Number(res.headers.get("Retry-After")) || 1);
        await new Promise((r) => setTimeout(r, wait * 1000));
        continue;
      }
      if (!res.ok) throw await errorOf(res);
      return res;
    }
  } finally {
    changed(-1);
  }
}

const json = async (res) => (res.status === 204 ? null : res.json());

export const health = () => send("GET", "/api/health").then(json);
export const media = () => send("GET", "/api/media").then(json);

/** Open a picture: {file} (uploaded), {sample: "photo"} or {path} under the media root. */
export function openImage(source) { return open("/api/images", source); }
export function openVideo(source) { return open("/api/videos", source); }

function open(url, source) {
  if (source.file) {
    const form = new FormData();
    form.append("file", source.file, source.file.name);
    return send("POST", url, { form }).then(json);
  }
  const body = source.sample ? { sample: source.sample } : { path: source.path };
  return send("POST", url, { json: body }).then(json);
}

export const picture = (id, quality = 95) =>
  send("GET", `/api/images/${id}/picture?quality=${quality}`).then((r) => r.blob());
export const predict = (id, body) => send("POST", `/api/images/${id}/predict`, { json: body }).then(json);
export const automatic = (id, body) => send("POST", `/api/images/${id}/automatic`, { json: body }).then(json);
export const closeImage = (id) => send("DELETE", `/api/images/${id}`).then(json);

const V = (sid) => `/api/videos/${encodeURIComponent(sid)}`;
export const videoState = (sid) => send("GET", V(sid)).then(json);
export const frame = (sid, i, signal) => send("GET", `${V(sid)}/frames/${i}`, { signal }).then((r) => r.blob());
export const frameMasks = (sid, i) => send("GET", `${V(sid)}/frames/${i}/masks`).then(json);
export const prompt = (sid, body) => send("POST", `${V(sid)}/prompts`, { json: body }).then(json);
export const removeObject = (sid, obj) => send("DELETE", `${V(sid)}/objects/${obj}`).then(json);
export const reset = (sid) => send("POST", `${V(sid)}/reset`).then(json);
export const cancelTracking = (sid) => send("DELETE", `${V(sid)}/propagation`).then(json);
export const closeVideo = (sid) => send("DELETE", V(sid)).then(json);

/** Close a session as the page goes away (a request that outlives the page). */
export function closeVideoOnExit(sid) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  fetch(V(sid), { method: "DELETE", keepalive: true, headers }).catch(() => {});
}
export const exportVideo = (sid, format) => send("GET", `${V(sid)}/export?format=${format}`).then((r) => r.blob());

/** Track: POST .../propagate and call onItem(obj, line) for each NDJSON line as it arrives. Resolves
 *  with the last line ({"done": true, ...} or {"error": ...}); aborting `signal` closes the
 *  connection, which cancels the tracking on the server. */
export async function propagate(sid, body, onItem, signal) {
  const res = await send("POST", `${V(sid)}/propagate`, { json: body, signal });
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (!line) continue;
      last = JSON.parse(line);
      onItem(last, line);
    }
  }
  if (!last) throw new ApiError("The tracking stream ended without a result: the server may have stopped.", 0);
  return last;
}
