"""The batch ledger: one SQLite file that records every item's state, attempts, last error,
timings and the settings its outputs were made with; the driver alone writes it.

Why SQLite (stdlib ``sqlite3``) and not a JSONL log: every state change is made in a
transaction, atomic and durable against a killed process (write-ahead log: readers such as
``--status`` never block the writer and never see half a change); the driver commits the
changes of one scheduling round together (``transaction()``: the results that came in and the
items given out), which keeps the commit count per item below one when many workers finish at
once; a resumed run finds what is left with an
indexed query instead of replaying a log whose size grows with every attempt; one row per item
is updated in place, so the file stays proportional to the number of items (about 200 bytes an
item plus its COCO annotations); and ``--status`` can read it while a run goes on.

States: ``pending`` (not started, or to be redone), ``running`` (given to a worker; found so
at start-up it means the run that gave it out was killed, and the item is redone), ``done``
(its outputs are complete in OUT), ``failed`` (every attempt of the last run that tried it
failed; the next run tries again).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
import zlib
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,          -- stable: the COCO image id
    key TEXT NOT NULL UNIQUE,        -- output folder, relative to OUT
    source TEXT NOT NULL,            -- input path or URL
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,                      -- the last attempt's error
    settings TEXT,                   -- settings hash of the outputs in OUT (done items)
    worker TEXT,
    started REAL, finished REAL,     -- unix time of the last attempt
    seconds REAL                     -- the worker's time on the item
);
CREATE INDEX IF NOT EXISTS items_state ON items(state);
CREATE TABLE IF NOT EXISTS coco (    -- per image: zlib(image JSON, newline, annotations JSON)
    item_id INTEGER PRIMARY KEY REFERENCES items(id), data BLOB NOT NULL
);
"""


class Ledger:
    """The ledger at ``path`` (created if missing). ``readonly`` opens it for ``--status``."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        if readonly:  # a read-write handle that only reads: the last one to close removes the
            try:      # -wal/-shm files, which a read-only handle would leave behind in OUT
                self.db = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=30)
                self.db.execute("PRAGMA query_only = 1")
                self.db.execute("SELECT 1 FROM meta LIMIT 1")
            except sqlite3.OperationalError:  # a read-only folder
                self.db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        else:
            self.db = sqlite3.connect(self.path, timeout=30)  # `with self.db:` = one transaction
            self.db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives the process being killed at any moment (it is in the
            # OS's page cache); after a power cut the last commits may be lost, never half done
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)

        self._depth = 0

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def transaction(self):
        """Changes made inside are committed together (all or none); nested: the outer one."""
        if self._depth:
            yield
            return
        self._depth = 1
        try:
            with self.db:
                yield
        finally:
            self._depth = 0

    def _tx(self, sql: str, *params) -> None:
        with self.transaction():
            self.db.execute(sql, params)

    # ---- run-level information ---------------------------------------------------------

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def set_meta(self, **values) -> None:
        with self.transaction():
            self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                [(k, json.dumps(v)) for k, v in values.items()])

    # ---- items ---------------------------------------------------------------------------

    def add(self, items) -> dict[str, tuple]:
        """Record new items (key, source) and update moved sources, in one transaction;
        returns key -> (id, state, settings hash) for every item given."""
        with self.transaction():
            self.db.executemany(
                "INSERT INTO items (key, source) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET source = excluded.source WHERE source != excluded.source",
                [(it.key, it.source) for it in items])
        rows = {}
        keys = [it.key for it in items]
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = f"SELECT key, id, state, settings FROM items WHERE key IN ({','.join('?' * len(chunk))})"
            rows.update({k: (i_, s, h) for k, i_, s, h in self.db.execute(q, chunk)})
        return rows

    def start(self, item_id: int, worker: str = "") -> None:
        """An attempt begins: ``running``, one more attempt."""
        self._tx("UPDATE items SET state = 'running', attempts = attempts + 1, worker = ?, "
                 "started = ?, finished = NULL WHERE id = ?", worker, time.time(), item_id)

    def done(self, item_id: int, settings: str, seconds: float, worker: str = "",
             coco: bytes | None = None) -> None:
        """The item's outputs are complete in OUT; its COCO part (``encode_coco``) is stored
        with it, atomically."""
        with self.transaction():
            self.db.execute("UPDATE items SET state = 'done', error = NULL, settings = ?, seconds = ?, "
                            "worker = ?, finished = ? WHERE id = ?",
                            (settings, seconds, worker, time.time(), item_id))
            if coco is not None:
                self.db.execute("INSERT OR REPLACE INTO coco VALUES (?, ?)", (item_id, coco))
            else:
                self.db.execute("DELETE FROM coco WHERE item_id = ?", (item_id,))

    def fail(self, item_id: int, error: str, final: bool, seconds: float | None = None,
             worker: str = "") -> None:
        """An attempt failed: back to ``pending`` for a retry, or ``failed`` (``final``)."""
        self._tx("UPDATE items SET state = ?, error = ?, seconds = ?, worker = ?, finished = ? "
                 "WHERE id = ?", "failed" if final else "pending", error, seconds, worker,
                 time.time(), item_id)

    def redo(self, item_ids: list[int]) -> None:
        """Done items to be made again (other settings, or their outputs went missing)."""
        with self.transaction():
            self.db.executemany("UPDATE items SET state = 'pending' WHERE id = ?",
                                [(i,) for i in item_ids])

    # ---- reading ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        c = dict(self.db.execute("SELECT state, COUNT(*) FROM items GROUP BY state"))
        return {s: c.get(s, 0) for s in ("done", "failed", "pending", "running")}

    def summary(self) -> dict:
        n, attempts, first, last, busy = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(attempts), 0), MIN(started), MAX(finished), "
            "COALESCE(SUM(seconds), 0) FROM items").fetchone()
        return {"items": n, "attempts": attempts, "first_started": first, "last_finished": last,
                "worker_seconds": busy}

    def failures(self, limit: int = 20) -> list[dict]:
        q = ("SELECT key, source, attempts, error FROM items WHERE state = 'failed' "
             "ORDER BY id LIMIT ?")
        return [dict(zip(("key", "source", "attempts", "error"), r)) for r in self.db.execute(q, (limit,))]

    def coco_texts(self):
        """(image JSON, annotations JSON joined by ",\n") of done items, in id order."""
        q = ("SELECT coco.data FROM items JOIN coco ON coco.item_id = items.id "
             "WHERE items.state = 'done' ORDER BY items.id")
        for (blob,) in self.db.execute(q):
            image, _, annotations = zlib.decompress(blob).decode().partition("\n")
            yield image, annotations

    def coco_parts(self):
        """(image, annotations) of done items, in id order, as Python objects."""
        for image, anns in self.coco_texts():
            yield json.loads(image), json.loads(f"[{anns}]")

    def snapshot(self, dest: str | Path) -> None:
        """A consistent copy of the ledger (SQLite's online backup), e.g. to upload."""
        out = sqlite3.connect(dest)
        try:
            self.db.backup(out)
        finally:
            out.close()
