"""The cache of reference outputs (tests/reference_cache.py), with a stand-in for the reference:
a "script" run in this process that counts its runs. What is checked: a hit returns the stored
outputs without running the reference; any change to what the run depends on (job, input file,
script, a module it imports, the reference's identity) runs it again; a damaged entry is
computed again and replaced, never used; a failed run stores nothing; concurrent runs of one
key compute it once; the same weights saved under another file name hit."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reference_cache import In, Job, Out, ReferenceCache, content_hash, reference_identity

SCRIPT = """\
from helper import SCALE  # a module of the parity folder: part of the key
"""


class FakeReference:
    """Runs "scripts" here: reads the job file (argv[0]), writes argv[1] (or job["out_dir"])."""

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.runs: list[str] = []
        self.delay, self.fail = delay, fail
        self.lock = threading.Lock()

    def __call__(self, script: Path, argv: list[str], env: dict) -> None:
        with self.lock:
            self.runs.append(script.name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("reference script failed")
        scale = float((script.parent / "helper.py").read_text().split("=")[1])
        if argv[0].endswith(".json"):
            job = json.loads(Path(argv[0]).read_text())
            out = Path(job["out_dir"])
            (out / "sub").mkdir(parents=True, exist_ok=True)
            (out / "sub" / "a.txt").write_text(str(job["x"] * scale))
            (out / "b.txt").write_text(Path(job["input"]).read_text())
            return
        job = torch.load(argv[0], weights_only=False)
        weights = torch.load(job["checkpoint"], weights_only=True)["model"]["w"] if job.get("checkpoint") else 0
        torch.save({"y": job["x"] * scale + weights, "calls": len(self.runs)}, argv[1])


@pytest.fixture
def parity(tmp_path) -> Path:
    d = tmp_path / "parity"
    d.mkdir()
    (d / "ref_fake.py").write_text(SCRIPT)
    (d / "helper.py").write_text("SCALE = 2")
    return d


def make_cache(tmp_path, parity, fake, identity=None) -> ReferenceCache:
    return ReferenceCache(tmp_path / "cache", Path("/nonexistent/python"), parity, runner=fake,
                          identity=identity or {"versions": {"sam2": "1.1.0"}})


def run(cache, tmp_path, x, name="out.pt", **job):
    out = tmp_path / "work" / name
    out.parent.mkdir(exist_ok=True)
    if out.exists():
        out.unlink()
    ran = cache.run("ref_fake.py", Job(dict(x=x, **job)), Out(out))
    return ran, torch.load(out, weights_only=False)


def test_a_hit_does_not_run_the_reference(tmp_path, parity):
    fake = FakeReference()
    cache = make_cache(tmp_path, parity, fake)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    ran, first = run(cache, tmp_path, x)
    assert ran and len(fake.runs) == 1 and cache.calls == 1
    ran, again = run(cache, tmp_path, x.copy())
    assert not ran and len(fake.runs) == 1 and cache.hits == 1
    np.testing.assert_array_equal(again["y"], first["y"])
    assert again["calls"] == 1  # the stored output, not a new one
    # a new cache object over the same folder (a later test session) hits too
    later = make_cache(tmp_path, parity, fake)
    assert not run(later, tmp_path, x)[0] and len(fake.runs) == 1


def test_any_change_runs_the_reference_again(tmp_path, parity):
    fake = FakeReference()
    cache = make_cache(tmp_path, parity, fake)
    x = np.ones(4, np.float32)
    assert run(cache, tmp_path, x)[0]
    # the job: a value, a dtype, a case field
    assert run(cache, tmp_path, x * 3)[0]
    assert run(cache, tmp_path, x.astype(np.float64))[0]
    assert run(cache, tmp_path, x, case="other")[0]
    assert len(fake.runs) == 4
    # the script, and a module it imports from the parity folder
    (parity / "ref_fake.py").write_text(SCRIPT + "# changed\n")
    assert run(cache, tmp_path, x)[0]
    (parity / "helper.py").write_text("SCALE = 5")
    ran, out = run(cache, tmp_path, x)
    assert ran and np.array_equal(out["y"], x * 5)  # the new helper's output, not the stored one
    # the reference's version
    newer = make_cache(tmp_path, parity, fake, identity={"versions": {"sam2": "1.1.1"}})
    assert run(newer, tmp_path, x)[0]
    assert len(fake.runs) == 7
    # what was computed with the current script and reference still hits; x * 3 was computed
    # with the old script, so it runs again
    assert not run(cache, tmp_path, x)[0] and not run(newer, tmp_path, x)[0]
    assert len(fake.runs) == 7
    assert run(cache, tmp_path, x * 3)[0] and len(fake.runs) == 8


def test_a_changed_input_file_runs_again_and_a_renamed_checkpoint_hits(tmp_path, parity):
    fake = FakeReference()
    cache = make_cache(tmp_path, parity, fake)
    ckpt = tmp_path / "a" / "tiny.pt"
    ckpt.parent.mkdir()
    torch.save({"model": {"w": torch.tensor([1.0, 2.0])}}, ckpt)
    ran, out = run(cache, tmp_path, 1.0, checkpoint=In(ckpt))
    assert ran and out["y"].tolist() == [3.0, 4.0]
    # torch.save names the archive's folder after the file: other bytes, the same weights
    renamed = tmp_path / "b" / "other-name.pt"
    renamed.parent.mkdir()
    torch.save({"model": {"w": torch.tensor([1.0, 2.0])}}, renamed)
    assert renamed.read_bytes() != ckpt.read_bytes()
    assert content_hash(renamed) == content_hash(ckpt)
    assert not run(cache, tmp_path, 1.0, checkpoint=In(renamed))[0]
    # other weights under the same name
    torch.save({"model": {"w": torch.tensor([1.0, 2.5])}}, ckpt)
    ran, out = run(cache, tmp_path, 1.0, checkpoint=In(ckpt))
    assert ran and out["y"].tolist() == [3.0, 4.5]
    assert len(fake.runs) == 2


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete the output", "bad manifest", "extra file"])
def test_a_damaged_entry_is_computed_again_not_used(tmp_path, parity, damage):
    fake = FakeReference()
    cache = make_cache(tmp_path, parity, fake)
    x = np.arange(5, dtype=np.float32)
    run(cache, tmp_path, x)
    (entry,) = [p for p in (tmp_path / "cache").glob("*/*") if p.is_dir()]
    stored = entry / "out" / "0"
    if damage == "flip a byte":
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0xFF
        stored.write_bytes(bytes(data))
    elif damage == "truncate":
        stored.write_bytes(stored.read_bytes()[:100])
    elif damage == "delete the output":
        stored.unlink()
    elif damage == "bad manifest":
        (entry / "manifest.json").write_text("{not json")
    else:
        (entry / "out" / "1").write_text("left over")
    ran, out = run(cache, tmp_path, x)
    assert ran and len(fake.runs) == 2
    assert out["calls"] == 2 and np.array_equal(out["y"], x * 2)  # computed now, not the damaged one
    assert not run(cache, tmp_path, x)[0] and len(fake.runs) == 2  # the entry was replaced
    leftovers = [p.name for p in (tmp_path / "cache").glob("*/*") if p.name.startswith((".tmp-", ".trash-"))]
    assert leftovers == []


def test_folder_outputs_and_inputs(tmp_path, parity):
    """Scripts that write folders (as ref_vos.py does) and read folders: restored file by file."""
    fake = FakeReference()
    cache = make_cache(tmp_path, parity, fake)
    src = tmp_path / "data"
    (src / "seq").mkdir(parents=True)
    (src / "seq" / "0.txt").write_text("frame")

    def go(dest):
        job = dict(x=3, input=str(src / "seq" / "0.txt"), data=In(src), out_dir=Out(tmp_path / dest))
        return cache.run("ref_fake.py", Job(job, "json"))

    assert go("first")
    assert not go("second")
    assert (tmp_path / "second/sub/a.txt").read_text() == "6.0" and (tmp_path / "second/b.txt").read_text() == "frame"
    (src / "seq" / "1.txt").write_text("another frame")  # a new file in an input folder
    assert go("third") and len(fake.runs) == 2


def test_a_failed_run_stores_nothing(tmp_path, parity):
    fake = FakeReference(fail=True)
    cache = make_cache(tmp_path, parity, fake)
    with pytest.raises(RuntimeError, match="failed"):
        run(cache, tmp_path, 1.0)
    assert not [p for p in (tmp_path / "cache").glob("*/*") if p.is_dir()]
    fake.fail = False
    assert run(cache, tmp_path, 1.0)[0] and len(fake.runs) == 2


def test_concurrent_runs_of_one_key_compute_once(tmp_path, parity):
    fake = FakeReference(delay=0.3)
    results = []

    def worker(i):
        cache = make_cache(tmp_path, parity, fake)  # each as its own session would
        out = tmp_path / f"out{i}.pt"
        cache.run("ref_fake.py", Job(dict(x=7.0)), Out(out))
        results.append(torch.load(out, weights_only=False)["y"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [14.0] * 3 and len(fake.runs) == 1


def test_paths_must_be_marked(tmp_path, parity):
    cache = make_cache(tmp_path, parity, FakeReference())
    with pytest.raises(TypeError, match=r"In\(...\) or Out\(...\)"):
        cache.run("ref_fake.py", Job(dict(checkpoint=tmp_path / "x.pt")), Out(tmp_path / "o.pt"))


def test_prune_deletes_entries_unused_for_a_month(tmp_path, parity):
    fake = FakeReference()
    cache = make_cache(tmp_path, parity, fake)
    run(cache, tmp_path, 1.0)
    run(cache, tmp_path, 2.0)
    old, recent = sorted((tmp_path / "cache").glob("*/*/manifest.json"), key=lambda p: p.parent.name)
    month = time.time() - 31 * 86400
    os.utime(old, (month, month))
    assert cache.prune() == 1
    assert not old.parent.exists() and recent.exists()
    assert len(fake.runs) == 2
    run(cache, tmp_path, 1.0)
    run(cache, tmp_path, 2.0)
    assert len(fake.runs) == 3  # the pruned one computed again, the other a hit (and marked used)
    assert cache.prune() == 0


@pytest.mark.parity
def test_the_reference_identifies_itself(reference_python):
    """The key's reference part, from the real reference environment."""
    ident = reference_identity(reference_python)
    assert ident["versions"]["sam2"] == "1.1.0" and ident["versions"]["torch"]
    assert len(ident["sam2_files"]) == 64
