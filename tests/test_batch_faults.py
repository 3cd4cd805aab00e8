"""`sam2kit batch` when things go wrong, provoked for real: an item that hangs (its input is a
named pipe nobody writes: the worker blocks in ``open``, as on a dead network mount), items that
kill their worker process (``os._exit`` and a real SIGSEGV, through the test-only start-up hook
in tests/fault_hooks/), Ray actors killed in the middle of an item (SIGKILL of the actor's
process, and ``ray.kill``), and a second driver on "another host" of a shared file system
(another process with another host name in its lease).

Cost: one local batch with two worker processes, one Ray runtime for two runs, small batches in
this process: measured 100 s for the local and lease tests (load average 8 on 2 cores) and
110 s for the two Ray runs (load average 20); less on an idle machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import synthetic_image
from sam2kit.cli import main
from test_batch import batch_argv, ckpt, ledger_rows  # noqa: F401  (ckpt: the module's checkpoint)

HOOKS = Path(__file__).parent / "fault_hooks"
TIMEOUT_S = 8  # --item-timeout: far above a healthy item here (~0.5 s; a few s on a loaded machine)


def photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        out.append(folder / f"good{k}.png")
        Image.fromarray(synthetic_image(96, 128, seed=k)).save(out[-1])
    return out


def manifest(path: Path, entries: dict[str, Path]) -> Path:
    path.write_text("".join(json.dumps({"path": str(p), "output": key}) + "\n" for key, p in entries.items()))
    return path


def readers_of(path: Path) -> list[int]:
    """Pids of the processes that have ``path`` open (scanning /proc/*/fd)."""
    target, pids = str(path), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == target for fd in os.listdir(f"/proc/{pid}/fd")):
                pids.append(int(pid))
        except OSError:
            continue
    return pids


def wait_for_reader(fifo: Path, deadline: float) -> tuple[int, int]:
    """Block until a worker has opened ``fifo`` (then it blocks in read: the writer end is held
    open and never written); returns (the writer's fd, the reader's pid)."""
    while time.time() < deadline:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads
        except OSError:
            time.sleep(0.02)
            continue
        for _ in range(100):
            pids = [p for p in readers_of(fifo) if p != os.getpid()]
            if pids:
                return fd, pids[0]
            time.sleep(0.02)
    raise AssertionError(f"no worker opened {fifo}")


class PipeWatch:
    """A thread that, each time a worker opens ``fifo``, opens its writing end (so the worker
    goes on to block in read, where /proc shows it holding the pipe), records the worker's pid,
    and closes its end once that process is gone."""

    def __init__(self, fifo: Path):
        self.fifo, self.pids, self.stop = fifo, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                fd, pid = wait_for_reader(self.fifo, time.time() + 1)
            except AssertionError:
                continue
            self.pids.append(pid)
            while alive(pid) and not self.stop.is_set():
                time.sleep(0.05)
            os.close(fd)

    def close(self) -> list[int]:
        self.stop.set()
        self.thread.join(10)
        return self.pids


def query(out: Path, sql: str) -> list[tuple]:
    import sqlite3

    db = sqlite3.connect(f"file:{out / 'batch.sqlite'}?mode=rw", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def alive(pid: int) -> bool:
    from sam2kit.batch.lease import pid_alive

    return pid_alive(pid)


# ---- local worker processes -----------------------------------------------------------------

def test_hung_and_crashing_items_fail_alone(ckpt, tmp_path, monkeypatch, capsys):  # noqa: F811
    """Two worker processes, --item-timeout, --retries 1: the hung item times out twice, each
    poison item kills its worker twice (exit 86, SIGSEGV); each is recorded failed with why,
    its workers are replaced, and the good items are made; exit status 3."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HOOKS), os.environ.get("PYTHONPATH", "")]))
    good = photos(tmp_path / "in", 3)
    hang = tmp_path / "in" / "hang.png"
    os.mkfifo(hang)
    poison = {}
    for kind in ("exit", "segv"):
        poison[kind] = tmp_path / "in" / f"bad.poison-{kind}.png"
        shutil.copy(good[0], poison[kind])  # a good picture: only the hook makes it deadly
    items = {"hang": hang, "exit": poison["exit"], "segv": poison["segv"],
             **{f"good{k}": p for k, p in enumerate(good)}}
    out = tmp_path / "out"
    capsys.readouterr()
    watch = PipeWatch(hang)
    rc = main(batch_argv(ckpt, [], out, "--manifest", manifest(tmp_path / "items.jsonl", items), "--grid",
                         "1x1", "--workers", "2", "--threads-per-worker", "1", "--retries", "1",
                         "--item-timeout", TIMEOUT_S, quiet=False))
    text = capsys.readouterr().out
    hung = watch.close()
    assert rc == 3, text
    rows = ledger_rows(out)
    assert {k: r["state"] for k, r in rows.items()} == {
        "hang": "failed", "exit": "failed", "segv": "failed", "good0": "done", "good1": "done", "good2": "done"}
    assert all(rows[k]["attempts"] == 2 for k in ("hang", "exit", "segv"))
    assert all(rows[k]["attempts"] == 1 for k in ("good0", "good1", "good2"))
    assert rows["hang"]["error"].startswith(f"timed out after {TIMEOUT_S} s (--item-timeout)")
    assert "died (exit code 86)" in rows["exit"]["error"]
    assert "died (killed by SIGSEGV)" in rows["segv"]["error"]
    assert "3 made" in text and "3 failed (3 retries)" in text
    assert len(hung) == 2 and not any(alive(pid) for pid in hung)  # hung workers killed, not left
    workers = {r[0] for r in query(out, "SELECT worker FROM items WHERE state = 'failed'")}
    assert all(int(w.split("-")[1]) >= 2 for w in workers), workers  # replacements made the retries
    assert sorted(p.name for p in out.iterdir() if p.name != ".batch") == \
        ["annotations.json", "batch.sqlite", "good0", "good1", "good2"]
    assert list((out / ".batch" / "partial").iterdir()) == []  # no half-made item left behind


# ---- Ray --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_runtime():
    """One local Ray runtime (127.0.0.1) for the module; batches use it as it is."""
    pytest.importorskip("ray")
    from sam2kit.batch.ray_backend import start_local

    ray = start_local(num_cpus=2)
    yield ray
    ray.shutdown()


def test_ray_actor_killed_mid_item_is_redone_elsewhere(ckpt, tmp_path, ray_runtime, monkeypatch):  # noqa: F811
    """Two actors, each blocked on an item (a named pipe); the test then kills one actor's
    process with SIGKILL and the other with ``ray.kill``, after swapping a real picture in
    under the pipe's name: both items are redone by new actors, the items queued behind them
    go to the other actors without an attempt spent, and every item is done once."""
    from sam2kit.batch import ray_backend

    actors = []
    real_new = ray_backend.RayBackend._new_actor

    def new_actor(self):
        actors.append(real_new(self))
        return actors[-1]

    monkeypatch.setattr(ray_backend.RayBackend, "_new_actor", new_actor)
    good = photos(tmp_path / "in", 4)
    fifos = {key: tmp_path / "in" / f"{key}.png" for key in ("a-hang", "b-hang")}
    for f in fifos.values():
        os.mkfifo(f)
    items = {**fifos, **{f"good{k}": p for k, p in enumerate(good)}}
    killed = {}

    def killer():
        deadline = time.time() + 300
        for k, (key, fifo) in enumerate(fifos.items()):
            fd, pid = wait_for_reader(fifo, deadline)
            shutil.copy(good[k], fifo.with_suffix(".tmp"))
            os.replace(fifo.with_suffix(".tmp"), fifo)  # the retry will read a real picture
            if key == "a-hang":
                os.kill(pid, signal.SIGKILL)
            else:  # the second item went to the second actor (the least loaded one)
                ray_runtime.kill(actors[1])
            killed[key] = pid
            os.close(fd)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    out = tmp_path / "out"
    assert main(batch_argv(ckpt, [], out, "--manifest", manifest(tmp_path / "items.jsonl", items),
                           "--grid", "1x1", "--ray", "local", "--workers", "2", "--threads-per-worker", "1",
                           "--retries", "1")) == 0
    thread.join(10)
    assert set(killed) == set(fifos)
    rows = ledger_rows(out)
    assert set(rows) == set(items) and all(r["state"] == "done" for r in rows.values())
    assert {k: r["attempts"] for k, r in rows.items()} == {"a-hang": 2, "b-hang": 2, **{f"good{k}": 1 for k in range(4)}}
    by = dict(query(out, "SELECT key, worker FROM items"))
    assert by["a-hang"] not in ("ray-actor-0",) and by["b-hang"] != "ray-actor-1", by
    assert len(actors) == 4  # each killed actor was replaced once
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(items)  # each once
    assert len({i["id"] for i in coco["images"]}) == len(items)
    for key in items:
        assert json.loads((out / key / "results.json").read_text())["prompts"]


def test_ray_item_timeout(ckpt, tmp_path, ray_runtime):  # noqa: F811
    """On Ray, a hung item's actor is killed after --item-timeout and the item fails as timed out."""
    good = photos(tmp_path / "in", 1)
    hang = tmp_path / "in" / "hang.png"
    os.mkfifo(hang)
    out = tmp_path / "out"
    watch = PipeWatch(hang)
    assert main(batch_argv(ckpt, [], out, "--manifest", manifest(tmp_path / "i.jsonl", {"hang": hang, "good0": good[0]}),
                           "--grid", "1x1", "--ray", "local", "--workers", "1", "--threads-per-worker", "1",
                           "--retries", "0", "--item-timeout", TIMEOUT_S)) == 3
    rows = ledger_rows(out)
    assert rows["hang"]["state"] == "failed" and rows["hang"]["attempts"] == 1
    assert rows["hang"]["error"].startswith(f"timed out after {TIMEOUT_S} s (--item-timeout): its Ray actor")
    assert rows["good0"]["state"] == "done" and rows["good0"]["attempts"] == 1
    for _ in range(100):  # the actor's process is gone (ray.kill is asynchronous)
        if watch.pids and not alive(watch.pids[0]):
            break
        time.sleep(0.1)
    assert len(watch.close()) == 1 and not alive(watch.pids[0])


# ---- the output's lock on a shared file system ------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from sam2kit.batch.lease import Lease
lease = Lease(Path(sys.argv[1]), sys.argv[2], host="node-b", heartbeat_s=0.1)
lease.acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_output_lease_across_hosts(ckpt, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A driver on "node-b" (another process with another host name) holds OUT: this driver
    refuses, naming it; once node-b is killed its heartbeat stops and, past STALE_S, the lease
    is taken over; a lease of a dead process on this host is taken over at once; a driver
    whose lease another took over stops."""
    from sam2kit.batch import lease as lease_mod

    monkeypatch.setattr(lease_mod, "STALE_S", 1.0)
    monkeypatch.setattr(lease_mod, "HEARTBEAT_S", 0.1)
    photo = photos(tmp_path / "in", 3)
    out = tmp_path / "out"
    argv = batch_argv(ckpt, [photo[0]], out, "--grid", "1x1")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out / ".batch"), str(out)],
                              stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert holder.stdout.readline().strip() == "held"
        time.sleep(1.5)  # longer than STALE_S: a live holder's heartbeat keeps its lease fresh
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "another sam2kit batch is writing" in err and "host node-b" in err and "taken over after 1 s" in err
        assert not (out / "good0.png").exists()
    finally:
        holder.kill()
        holder.wait()
    for _ in range(100):  # node-b's heartbeat stopped: its lease goes stale after STALE_S
        if main(argv) == 0:
            break
        time.sleep(0.2)
    assert ledger_rows(out)["good0.png"]["state"] == "done"
    assert not (out / ".batch" / "lease.json").exists()  # given back at the end

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".batch" / "lease.json").write_text(json.dumps(
        {"owner": "x", "host": socket.gethostname(), "pid": int(dead.stdout), "heartbeat": time.time()}))
    assert main(batch_argv(ckpt, [photo[1]], out, "--grid", "1x1")) == 0  # its process is gone

    def take_over():  # node-b takes the lease while this driver makes its first item
        while not (out / ".batch" / "lease.json").exists():
            time.sleep(0.01)
        (out / ".batch" / "lease.json").write_text(json.dumps(
            {"owner": "y", "host": "node-b", "pid": 1, "heartbeat": time.time() + 3600}))

    thief = threading.Thread(target=take_over, daemon=True)
    thief.start()
    capsys.readouterr()
    assert main(batch_argv(ckpt, [tmp_path / "in"], out, "--grid", "1x1")) == 2
    thief.join(10)
    assert "lost the lock" in capsys.readouterr().err
    assert json.loads((out / ".batch" / "lease.json").read_text())["owner"] == "y"  # left to its owner
