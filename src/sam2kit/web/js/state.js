// The page's state, changed in one place: update() and the history helpers below. The view
// subscribes and redraws from the state (at most once per animation frame). Data derived
// from the server's answers (decoded masks, frames) live in caches beside the controllers;
// they call touch() when a cache changes so the view redraws.
//
// The "document" (state.doc) is what undo/redo walk through: the objects (name, colour,
// hidden), the selected one, and the prompts (pictures: each object's clicks and box and the
// chosen candidate; videos: the clicks and box of each object on each frame). Documents are
// never changed in place: each change makes a new one (see doc.js).

const listeners = new Set();
let state = initialState();
let scheduled = false;
let jobSeq = 0;

export function initialState() {
  return {
    mode: "empty",        // "empty" | "picture" | "video"
    doc: emptyDoc(),
    past: [], future: [],
    jobs: [],             // what is running: [{id, text, started, done, total}]
    message: "Open a picture or a video to start.",
    error: null,
    showMasks: true,
    help: false,
    health: null,
    media: null,          // entries under the server's media root, or null
    tick: 0,              // bumped when a cache changes
    // picture mode
    picture: null,        // {id, width, height, name, bitmap}
    everything: null,     // {anns: [...], hover: index|null} while "segment everything" shows
    // video mode
    video: null,          // {id, numFrames, width, height, fps, name}
    frame: 0, playing: false, follow: false,
    tracking: null,       // {direction, done, total, started, cancelling}
  };
}

export function emptyDoc() { return { objects: [], selected: null, prompts: {} }; }

export const getState = () => state;

/** Change the state: `patch` is an object or a function of the state returning one. */
export function update(patch) {
  const change = typeof patch === "function" ? patch(state) : patch;
  if (change) state = { ...state, ...change };
  schedule();
}

export function touch() { update((s) => ({ tick: s.tick + 1 })); }

/** A new document, undoable (the previous one goes on the undo stack). */
export function commit(doc) {
  update((s) => ({ doc, past: [...s.past, s.doc].slice(-200), future: [] }));
}

/** Replace the document without an undo step (a rename as it is typed, a selection). */
export function replaceDoc(doc) { update({ doc }); }

export function undo() {
  if (!state.past.length) return false;
  update((s) => ({ doc: s.past[s.past.length - 1], past: s.past.slice(0, -1), future: [s.doc, ...s.future] }));
  return true;
}

export function redo() {
  if (!state.future.length) return false;
  update((s) => ({ doc: s.future[0], future: s.future.slice(1), past: [...s.past, s.doc] }));
  return true;
}

/** A job shown in the status line while it runs; returns {progress(done, total), end(message)}. */
export function startJob(text, total = null) {
  const job = { id: ++jobSeq, text, started: performance.now(), done: 0, total };
  update((s) => ({ jobs: [...s.jobs, job] }));
  const replace = (change) => update((s) => ({
    jobs: s.jobs.map((j) => (j.id === job.id ? { ...j, ...change } : j)),
  }));
  return {
    progress: (done, total2 = job.total) => replace({ done, total: total2 }),
    text: (text2) => replace({ text: text2 }),
    end: (message) => update((s) => ({
      jobs: s.jobs.filter((j) => j.id !== job.id),
      message: message ?? s.message,
    })),
    elapsed: () => (performance.now() - job.started) / 1000,
  };
}

export function showError(error) {
  const message = typeof error === "string" ? error : error.message || String(error);
  update({ error: message });
}

export const isScheduled = () => scheduled;

export function subscribe(fn) { listeners.add(fn); schedule(); }

function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    for (const fn of listeners) fn(state);
  });
}

/** Start afresh for a newly opened file (mode "picture" or "video"). */
export function reset(change) {
  state = { ...initialState(), health: state.health, media: state.media, showMasks: state.showMasks,
    jobs: state.jobs, ...change };
  schedule();
}
