"""`sam2kit batch` end to end, on a generated folder of small photos and short clips with a
random tiny checkpoint at resolution 256: every item's outputs equal those of the single-item
command; a run killed with SIGKILL resumes and makes each item once; damaged items and bad
prompts fail while the rest succeed; changed settings are refused; two worker processes, a real
Ray runtime on 127.0.0.1 and an S3-compatible server on 127.0.0.1 (moto) give the same outputs
as one worker; --status reads the ledger.

Cost: one batch per feature (one model load each), one Ray runtime and one moto server for
the module: about 45 s on an idle 2-core machine (8.5 min when the machine was shared with
other work at a load average of 13).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sam2kit
from clips import write_clip
from conftest import synthetic_image
from sam2kit.image.amg import rle_to_mask
from sam2kit.build import build_model
from sam2kit.cli import main

W, H = 160, 120
IMAGES = ["a/im0.png", "a/im1.jpg", "a/deep/im2.png", "b/im3.png", "b/im4.png", "im5.png"]
VOLATILE = {"timings_s", "frames_per_second"}


# ---- data ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A random sam2-hiera-tiny checkpoint whose objects are always 'present'."""
    torch.manual_seed(11)
    sd = build_model(sam2kit.get_config("sam2-hiera-tiny")).state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    path = tmp_path_factory.mktemp("batch_ckpt") / "random_tiny.pt"
    torch.save({"model": sd}, path)
    return path


def frames(n: int, w: int = 128, h: int = 96, shift: int = 0) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        img = np.full((h, w, 3), 80, np.uint8)
        img[((xx - w // 3 - 7 * i - shift) ** 2 + (yy - h // 2) ** 2) < (h // 4) ** 2] = (220, 50, 40)
        out.append(img)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """images/: six photos in subfolders; videos/: an mp4 (4 frames) and a frame folder (3)."""
    root = tmp_path_factory.mktemp("batch_data")
    for k, rel in enumerate(IMAGES):
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_image(H, W, seed=k)).save(root / "images" / rel, quality=95)
    (root / "videos" / "seq").mkdir(parents=True)
    for i, f in enumerate(frames(3, shift=10)):
        Image.fromarray(f).save(root / "videos" / "seq" / f"{i:05d}.jpg", quality=95)
    write_clip(root / "videos" / "clip.mp4", frames(4), 25)
    return root


def model_args(ckpt) -> list[str]:
    return ["--checkpoint", str(ckpt), "--resolution", "256", "--device", "cpu"]


def batch_argv(ckpt, inputs, out, *extra, quiet: bool = True) -> list[str]:
    return ["batch", *map(str, inputs), "-o", str(out), *model_args(ckpt), *map(str, extra)] + ["-q"] * quiet


@pytest.fixture(scope="module")
def baseline(ckpt, data, tmp_path_factory) -> Path:
    """The six photos, a 2x2 grid each, one worker (this process)."""
    out = tmp_path_factory.mktemp("batch_base") / "out"
    assert main(batch_argv(ckpt, [data / "images"], out, "--grid", "2x2")) == 0
    return out


# ---- checks -------------------------------------------------------------------------------

def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def results(path: Path, drop=()) -> dict:
    """results.json without its timings (and the keys in ``drop``)."""
    r = json.loads(path.read_text())
    for e in r.get("prompts", []):
        e.pop("predict_s", None)
    return {k: v for k, v in r.items() if k not in VOLATILE and k not in drop}


def assert_same_item(a: Path, b: Path, drop=()) -> None:
    """Two item folders hold the same files: pictures pixel for pixel, JSON but for timings."""
    assert files(a) == files(b) and files(a)
    for name in files(a):
        if name.endswith(".png"):
            assert np.array_equal(np.asarray(Image.open(a / name)), np.asarray(Image.open(b / name))), name
        elif name.endswith(".jpg"):
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
        elif name.endswith(".json"):
            assert results(a / name, drop) == results(b / name, drop), name


def ledger_rows(out: Path) -> dict:
    db = sqlite3.connect(f"file:{out / 'batch.sqlite'}?mode=rw", uri=True)  # not ro: see Ledger
    try:
        q = "SELECT key, state, attempts, error, finished FROM items"
        return {k: {"state": s, "attempts": a, "error": e, "finished": f} for k, s, a, e, f in db.execute(q)}
    finally:
        db.close()


# ---- outputs equal the single-item commands' -----------------------------------------------

def test_image_items_equal_sam2kit_image(ckpt, data, baseline, tmp_path):
    for rel in IMAGES[:2]:
        single = tmp_path / rel
        assert main(["image", str(data / "images" / rel), "-o", str(single), "--grid", "2x2", "-q",
                     *model_args(ckpt)]) == 0
        assert_same_item(baseline / rel, single)
    assert sorted(k for k, r in ledger_rows(baseline).items() if r["state"] == "done") == sorted(IMAGES)
    # the dataset's COCO file: every image, stable ids, RLE equal to the mask files
    from pycocotools.coco import COCO

    coco = COCO(str(baseline / "annotations.json"))
    rows = sqlite3.connect(baseline / "batch.sqlite").execute("SELECT id, key FROM items").fetchall()
    assert sorted((i["id"], i["file_name"]) for i in coco.dataset["images"]) == sorted(rows)
    assert len(coco.dataset["annotations"]) == 4 * len(IMAGES)
    for ann in coco.dataset["annotations"]:
        k = int(Path(ann["mask_file"]).stem.split("_")[1])
        assert ann["id"] == ann["image_id"] * 100000 + k + 1
        mask = np.asarray(Image.open(baseline / ann["mask_file"])) > 0
        assert np.array_equal(coco.annToMask(ann) > 0, mask) and np.array_equal(rle_to_mask(ann["segmentation"]), mask)
        assert ann["area"] == mask.sum()


def test_auto_and_video_items_equal_single_commands(ckpt, data, tmp_path):
    auto = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-thresh", "0"]
    out = tmp_path / "auto"
    assert main(batch_argv(ckpt, [data / "images" / "b"], out, "--task", "auto", *auto)) == 0
    assert main(["image", str(data / "images/b/im3.png"), "--auto", "-o", str(tmp_path / "single_auto"),
                 "-q", *auto, *model_args(ckpt)]) == 0
    assert_same_item(out / "im3.png", tmp_path / "single_auto")
    coco = json.loads((out / "annotations.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == ["im3.png", "im4.png"]
    per_item = json.loads((out / "im3.png" / "results.json").read_text())["annotations"]
    assert [a["segmentation"] for a in coco["annotations"] if a["image_id"] == 1] == [a["segmentation"] for a in per_item]

    # videos: the clip with its own prompts from a manifest (two objects, two frames), the
    # frame folder with the batch's default prompt
    manifest = data / "videos.jsonl"
    manifest.write_text(json.dumps({"path": "videos/clip.mp4", "prompts": [
        {"frame": 0, "object": 1, "points": [[45, 48]]},
        {"frame": 1, "object": 2, "box": [80, 10, 120, 40]}]}) + "\n"
        + json.dumps({"path": "videos/seq"}) + "\n")
    out = tmp_path / "video"
    assert main(batch_argv(ckpt, [], out, "--task", "video", "--manifest", manifest, "--point", "0:50%,50%")) == 0
    assert not (out / "annotations.json").exists()
    for rel, prompts in [("videos/clip.mp4", ["--point", "0:45,48:1@1", "--box", "1:80,10,120,40@2"]),
                         ("videos/seq", ["--point", "0:50%,50%"])]:
        single = tmp_path / "single" / rel
        assert main(["video", str(data / rel), "-o", str(single), "-q", *prompts, *model_args(ckpt)]) == 0
        assert (out / rel / "overlay.mp4").stat().st_size > 0
        assert_same_item(out / rel, single)
    assert len(list((out / "videos/clip.mp4/masks/2").iterdir())) == 4


# ---- resumable and crash-safe -------------------------------------------------------------

def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid``: their command lines."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out[int(stat.parent.name)] = (stat.parent / "cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigkill_then_resume_makes_each_item_once(ckpt, data, baseline, tmp_path):
    """Two worker processes; the driver is killed with SIGKILL after two items; its workers die
    with it; the rerun makes only what was left, and the outputs equal one worker's."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "sam2kit", *batch_argv(ckpt, [data / "images"], out, "--grid", "2x2",
                                                        "--workers", "2")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers, deadline = {}, time.time() + 240
    try:
        while time.time() < deadline:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            workers = children(proc.pid) or workers
            try:
                if sum(r["state"] == "done" for r in ledger_rows(out).values()) >= 2:
                    break
            except sqlite3.OperationalError:  # not made yet
                pass
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert sum("spawn_main" in cmd for cmd in workers.values()) == 2, workers
    for _ in range(200):  # the workers die with the driver (PR_SET_PDEATHSIG)
        if not any(alive(pid) for pid in workers):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"processes outlived the killed driver: {workers}")

    killed = ledger_rows(out)
    done = {k: r for k, r in killed.items() if r["state"] == "done"}
    assert 2 <= len(done) < len(IMAGES), "the run was not killed in the middle"
    for key in done:  # a done item is complete
        r = json.loads((out / key / "results.json").read_text())
        assert all((out / key / e["mask_file"]).is_file() for e in r["prompts"]) and len(r["prompts"]) == 4
    mtimes = {k: (out / k / "results.json").stat().st_mtime_ns for k in done}

    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    after = ledger_rows(out)
    assert all(r["state"] == "done" for r in after.values()) and set(after) == set(IMAGES)
    for key, r in after.items():
        if key in done:  # not made again
            assert r["attempts"] == 1 and r["finished"] == done[key]["finished"]
            assert (out / key / "results.json").stat().st_mtime_ns == mtimes[key]
        else:  # made once more if it was out when the driver died
            assert r["attempts"] == 1 + (killed[key]["state"] == "running")
    assert list((out / ".batch" / "partial").iterdir()) == []
    for rel in IMAGES:  # two workers, and a resumed run, give one worker's outputs
        assert_same_item(out / rel, baseline / rel)
    assert json.loads((out / "annotations.json").read_text())["annotations"] == \
        json.loads((baseline / "annotations.json").read_text())["annotations"]


def test_failed_items_and_status(ckpt, data, tmp_path, capsys):
    """A damaged file, a missing file and a prompt outside the picture fail (each retried
    once); the other items, with their own prompts, are made; exit status 3; --status."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "damaged.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    img = data / "images"
    manifest = tmp_path / "items.jsonl"
    lines = [{"path": str(img / "a/im0.png"), "output": "points", "points": [[40, 30], [100, 80]], "labels": [1, 0]},
             {"path": str(img / "a/im1.jpg"), "output": "boxes", "boxes": [[10, 10, 80, 60], [90, 20, 150, 100]]},
             {"path": str(img / "b/im3.png"), "output": "outside", "points": [[500, 50]]},
             {"path": str(tmp_path / "missing.png"), "output": "missing"}]
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(batch_argv(ckpt, [bad], out, "--manifest", manifest, "--retries", "1", "--grid", "1x1",
                           quiet=False)) == 3
    text = capsys.readouterr().out
    assert "2 made" in text and "3 failed (3 retries)" in text and "damaged.jpg" in text
    rows = ledger_rows(out)
    assert {k: r["state"] for k, r in rows.items()} == {"damaged.jpg": "failed", "points": "done",
                                                       "boxes": "done", "outside": "failed", "missing": "failed"}
    assert all(rows[k]["attempts"] == 2 for k in ("damaged.jpg", "outside", "missing"))
    assert "cannot read image" in rows["damaged.jpg"]["error"] and "does not exist" in rows["missing"]["error"]
    assert "outside the image" in rows["outside"]["error"]
    assert sorted(p.name for p in out.iterdir() if p.name != ".batch") == \
        ["annotations.json", "batch.sqlite", "boxes", "points"]
    single = tmp_path / "single"
    assert main(["image", str(img / "a/im0.png"), "-o", str(single), "--point", "40,30", "--point", "100,80:0",
                 "-q", *model_args(ckpt)]) == 0
    assert_same_item(out / "points", single)
    assert len(json.loads((out / "boxes" / "results.json").read_text())["prompts"]) == 2
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == ["boxes", "points"] and len(coco["annotations"]) == 3

    before = (out / "batch.sqlite").stat().st_mtime_ns
    assert main(["batch", "--status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "5: 2 done, 3 failed, 0 to do" in text and "outside the image" in text and "not running" in text
    assert main(["batch", "--status", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["done"], s["failed"], s["attempts"], s["task"]) == (2, 3, 8, "image")
    assert (out / "batch.sqlite").stat().st_mtime_ns == before


def test_changed_settings_are_refused_unless_overwrite(ckpt, data, tmp_path, capsys):
    out = tmp_path / "out"
    one = data / "images" / "im5.png"
    assert main(batch_argv(ckpt, [one], out, "--grid", "1x1")) == 0
    made = (out / "im5.png" / "results.json").stat().st_mtime_ns
    assert main(batch_argv(ckpt, [one], out, "--grid", "1x1")) == 0  # resumes: nothing to make
    assert (out / "im5.png" / "results.json").stat().st_mtime_ns == made
    capsys.readouterr()
    assert main(batch_argv(ckpt, [one], out, "--grid", "1x2")) == 2
    err = capsys.readouterr().err
    assert "1 item(s) made with other settings (prompt: --grid=1x1 -> --grid=1x2)" in err and "--overwrite" in err
    assert (out / "im5.png" / "results.json").stat().st_mtime_ns == made
    assert main(batch_argv(ckpt, [one], out, "--grid", "1x2", "--overwrite")) == 0
    assert sorted(p.name for p in (out / "im5.png").glob("mask_*")) == ["mask_00.png", "mask_01.png"]
    assert ledger_rows(out)["im5.png"]["attempts"] == 2


def test_bad_requests_fail_before_any_work(ckpt, data, tmp_path, capsys):
    img = data / "images"
    foreign = tmp_path / "foreign"
    (foreign / "keep.txt").parent.mkdir()
    (foreign / "keep.txt").write_text("user data")
    busy = tmp_path / "busy"
    (busy / ".batch").mkdir(parents=True)
    cases = [(batch_argv(ckpt, [tmp_path / "nope"], tmp_path / "o1"), "does not exist"),
             (batch_argv(ckpt, [img], tmp_path / "o2", "--point", "1,x"), "argument --point"),
             (batch_argv(ckpt, [img], tmp_path / "o3", "--task", "auto", "--grid", "2x2"), "--auto"),
             (batch_argv(ckpt, [img], foreign), "holds files but no batch ledger"),
             (batch_argv(ckpt, [img], busy), "another sam2kit batch is writing"),
             (["batch", str(img)], "-o OUT"),
             (["batch", "--status", str(tmp_path / "o1")], "no batch ledger")]
    with open(busy / ".batch" / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for argv, message in cases:
            capsys.readouterr()
            assert main(argv) == 2, argv
            err = capsys.readouterr().err
            assert message in err and err.count("\n") == 1, err
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]
    assert not any((tmp_path / f"o{k}").exists() for k in (1, 2, 3))


# ---- Ray and object stores ------------------------------------------------------------------

def test_ray_local_equals_one_worker(ckpt, data, baseline, tmp_path):
    """A real Ray runtime on 127.0.0.1, two actors each holding a model, two items a task."""
    pytest.importorskip("ray")
    out = tmp_path / "out"
    assert main(batch_argv(ckpt, [data / "images"], out, "--grid", "2x2", "--ray", "local",
                           "--workers", "2", "--threads-per-worker", "1", "--items-per-task", "2")) == 0
    rows = ledger_rows(out)
    assert set(rows) == set(IMAGES) and all(r["state"] == "done" and r["attempts"] == 1 for r in rows.values())
    for rel in IMAGES:
        assert_same_item(out / rel, baseline / rel)
    workers = sqlite3.connect(out / "batch.sqlite").execute("SELECT DISTINCT worker FROM items").fetchall()
    assert sorted(w for (w,) in workers) == ["ray-actor-0", "ray-actor-1"]


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3-compatible server on 127.0.0.1 (a free port), for the whole module."""
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def test_s3_round_trip(ckpt, data, baseline, tmp_path, s3_server, monkeypatch, capsys):
    """Inputs and outputs in an S3 bucket (real s3fs calls to the local server): the same
    outputs as on disk, the ledger copied to the bucket (in the background while items are
    made, and at the end), and resumed from there by a driver that has no local ledger."""
    import s3fs

    from sam2kit.batch.storage import fetch_input

    for k, v in {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr("sam2kit.batch.runner.SNAPSHOT_EVERY_S", 0.0)  # copy the ledger every round
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bucket")
    for rel in IMAGES[:3]:
        fs.put_file(str(data / "images" / rel), f"bucket/photos/{rel}")
    argv = batch_argv(ckpt, ["s3://bucket/photos/"], "s3://bucket/out", "--grid", "2x2",
                      "--state-dir", tmp_path / "state")
    assert main(argv) == 0
    fs.invalidate_cache()
    local = tmp_path / "downloaded"
    fs.get("bucket/out/", str(local), recursive=True)
    for rel in IMAGES[:3]:
        assert_same_item(local / rel, baseline / rel, drop={"image"})
        assert json.loads((local / rel / "results.json").read_text())["image"]["path"] == f"s3://bucket/photos/{rel}"
    coco = json.loads((local / "annotations.json").read_text())
    assert [i["path"] for i in coco["images"]] == [f"s3://bucket/photos/{rel}" for rel in sorted(IMAGES[:3])]
    assert sqlite3.connect(local / "batch.sqlite").execute(
        "SELECT COUNT(*) FROM items WHERE state = 'done'").fetchone()[0] == 3

    # another driver, without the local ledger: resumes from the bucket's copy, makes nothing
    fs.put_file(str(data / "images" / IMAGES[3]), f"bucket/photos/{IMAGES[3]}")
    capsys.readouterr()
    argv = batch_argv(ckpt, ["s3://bucket/photos/"], "s3://bucket/out", "--grid", "2x2",
                      "--state-dir", tmp_path / "state2", quiet=False)
    assert main(argv) == 0
    assert "1 made, 3 done before" in capsys.readouterr().out
    assert main(["batch", "--status", "s3://bucket/out", "--state-dir", str(tmp_path / "nowhere"), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["done"], s["attempts"]) == (4, 4)
    # a frame folder in the bucket comes down whole for a video item
    for f in sorted((data / "videos" / "seq").iterdir()):
        fs.put_file(str(f), f"bucket/videos/seq/{f.name}")
    got = fetch_input("s3://bucket/videos/seq", str(tmp_path))
    assert sorted(os.listdir(got)) == ["00000.jpg", "00001.jpg", "00002.jpg"]
