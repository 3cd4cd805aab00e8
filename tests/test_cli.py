"""The command line end to end: every output of `sam2kit image`, `video`, `models` and `demo`,
and every bad input (its message, exit status, and that nothing is written).

Weights: a random sam2-hiera-tiny checkpoint (object scores biased up, so that masks are not
empty), served as facebook/sam2-hiera-tiny by the local hub stand-in (the real download path)
or passed with --checkpoint. The model runs at --resolution 256 on small pictures and short
clips, so that the whole file takes well under a few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

import sam2kit
from clips import write_audio_only, write_clip, write_no_frames
from conftest import synthetic_image
from hub_standin import set_offline
from sam2kit.build import build_model
from sam2kit.cli import main
from sam2kit.outputs import davis_palette, mask_stats

TINY = sam2kit.get_config("sam2-hiera-tiny")
REPO, FILE = TINY.hub_id, TINY.checkpoint_file
RES = ["--resolution", "256"]
W, H = 160, 120  # the test photo


# ---- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def ckpt(tmp_path_factory) -> Path:
    """A random sam2-hiera-tiny checkpoint whose objects are always 'present'."""
    torch.manual_seed(7)
    sd = build_model(TINY).state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"].fill_(8.0)
    path = tmp_path_factory.mktemp("cli_ckpt") / "random_tiny.pt"
    torch.save({"model": sd}, path)
    return path


@pytest.fixture(scope="session")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli_photo") / "photo.png"
    Image.fromarray(synthetic_image(H, W, seed=3)).save(path)
    return path


def moving_frames(n: int, w: int, h: int) -> list[np.ndarray]:
    """A red disc moving right by 6 pixels a frame over a checkerboard."""
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        img = np.full((h, w, 3), 90, np.uint8)
        img[((xx - w // 3 - 6 * i) ** 2 + (yy - h // 2) ** 2) < (min(w, h) // 4) ** 2] = (230, 40, 40)
        img[(xx // 8 + yy // 8) % 2 == 0] += 20
        frames.append(img)
    return frames


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 6-frame 128x96 H.264 mp4 at 30 fps."""
    return write_clip(tmp_path_factory.mktemp("cli_clip") / "clip.mp4", moving_frames(6, 128, 96), 30)


@pytest.fixture(scope="session")
def frame_folder(tmp_path_factory) -> Path:
    """Four PNG frames of an odd size (121x91), numbered without padding."""
    folder = tmp_path_factory.mktemp("cli_frames") / "frames"
    folder.mkdir()
    for i, f in enumerate(moving_frames(4, 121, 91)):
        Image.fromarray(f).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def hub(hub_standin, ckpt):
    hub_standin.add(REPO, FILE, ckpt)
    return hub_standin


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def nothing_written(out: Path) -> bool:
    """No output folder, and no partial folder beside it."""
    return not out.exists() and not list(out.parent.glob(f"{out.name}.*"))


def assert_one_line_error(rc: int, err: str, *needles: str, code: int = 2) -> None:
    assert rc == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sam2kit") and "error:" in lines[0], err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), (needle, lines[0])


def png(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im


# ---- image ---------------------------------------------------------------------------------

def test_image_grid_through_the_hub(hub, photo, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "image", photo, "-o", out, *RES)
    assert rc == 0, err
    # the default model came through the real huggingface_hub download path
    assert ("HEAD", f"/{REPO}/resolve/main/{FILE}") in hub.requests
    files = sorted(p.name for p in out.iterdir())
    assert files == ["composite.png", *(f"mask_{k:02d}.png" for k in range(9)),
                     *(f"overlay_{k:02d}.png" for k in range(9)), "results.json"]
    r = json.loads((out / "results.json").read_text())
    assert r["model"] == REPO and r["model_config"] == "sam2-hiera-tiny" and r["resolution"] == 256
    assert r["device"] == "cpu" and r["image"]["width"] == W and r["image"]["height"] == H
    assert r["grid"] == {"rows": 3, "cols": 3} and r["multimask_output"] is True
    assert set(r["timings_s"]) >= {"load_model", "set_image", "predict_total", "total"}
    assert len(r["prompts"]) == 9
    for k, e in enumerate(r["prompts"]):
        row, col = divmod(k, 3)
        assert (e["grid_row"], e["grid_col"]) == (row, col)
        assert e["points"] == [[round((col + 0.5) * W / 3, 2), round((row + 0.5) * H / 3, 2)]]
        assert e["labels"] == [1] and len(e["candidate_scores"]) == 3
        assert e["score"] == max(e["candidate_scores"])
        assert e["chosen_candidate"] == e["candidate_scores"].index(e["score"])
        m = png(out / e["mask_file"])
        assert m.mode == "L" and m.size == (W, H)
        a = np.array(m)
        assert set(np.unique(a)) <= {0, 255}
        assert {k: e[k] for k in ("area", "area_fraction", "bbox_xyxy")} == mask_stats(a > 0)
        ov = png(out / e["overlay_file"])
        assert ov.mode == "RGB" and ov.size == (W, H)
    assert any(e["area"] > 0 for e in r["prompts"])
    comp = png(out / "composite.png")
    assert comp.mode == "RGB" and comp.size == (3 * W + 2 * 4, 3 * H + 2 * 4)  # panels, 4 px gaps
    assert "sam2-hiera-tiny" in stdout and "wrote" in stdout  # the summary
    assert "prompts" in err  # the progress bar


def test_image_points_box_percentages_json(ckpt, photo, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "image", photo, "-o", out, "--checkpoint", ckpt, *RES,
                          "--point", "50%,50%", "--point", "10,20:0", "--box", "25%,10%,120,100",
                          "--single-mask", "--json")
    assert rc == 0, err
    r = json.loads(stdout)  # stdout holds the results document only
    assert r == json.loads((out / "results.json").read_text())
    assert r["prompt_mode"] == "points" and r["grid"] is None and r["multimask_output"] is False
    (e,) = r["prompts"]
    assert e["points"] == [[80.0, 60.0], [10.0, 20.0]] and e["labels"] == [1, 0]
    assert e["box"] == [40.0, 12.0, 120.0, 100.0] and len(e["candidate_scores"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["composite.png", "mask_00.png",
                                                       "overlay_00.png", "results.json"]
    assert png(out / "composite.png").size == (W, H)


def test_image_several_boxes_quiet(ckpt, photo, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()  # an empty folder is fine without --overwrite
    rc, stdout, err = cli(capsys, "image", photo, "-o", out, "--checkpoint", ckpt, *RES, "-q",
                          "--box", "0,0,80,60", "--box", "80,60,160,120", "--box", "10,10,20,20")
    assert rc == 0 and stdout == "" and err == ""
    r = json.loads((out / "results.json").read_text())
    assert r["prompt_mode"] == "boxes" and [e["box"] for e in r["prompts"]][1] == [80, 60, 160, 120]
    assert len(list(out.glob("mask_*.png"))) == 3 and len(list(out.glob("overlay_*.png"))) == 3


def test_overwrite_replaces_earlier_outputs_only(ckpt, photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(capsys, "image", photo, "-o", out, "--checkpoint", ckpt, *RES, "--grid", "2x3", "-q")[0] == 0
    (out / "notes.txt").write_text("mine")
    rc, _, err = cli(capsys, "image", photo, "-o", out, "--checkpoint", ckpt, *RES, "--grid", "1x2", "-q")
    assert_one_line_error(rc, err, "not empty", "--overwrite")
    rc, _, err = cli(capsys, "image", photo, "-o", out, "--checkpoint", ckpt, *RES, "--grid", "1x2",
                     "-q", "--overwrite")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "composite.png", "mask_00.png", "mask_01.png", "notes.txt", "overlay_00.png",
        "overlay_01.png", "results.json"]  # stale masks 02..05 gone, notes.txt kept
    assert len(json.loads((out / "results.json").read_text())["prompts"]) == 2
    assert not list(tmp_path.glob("out.*"))


def test_staged_output_replaces_only_its_own_entries(tmp_path):
    from sam2kit.cli.common import StagedOutput

    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)
    (out / "frames" / "00099.jpg").write_text("old frame")
    (out / "masks").write_text("a file where a folder goes")
    (out / "mask_07.png").write_text("stale")
    (out / "mine.txt").write_text("keep")
    with StagedOutput(out, overwrite=True, stale=r"mask_\d+\.png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith("out.partial-")
        (tmp / "frames").mkdir()
        (tmp / "frames" / "00000.jpg").write_text("new")
        (tmp / "masks").mkdir()
        (tmp / "results.json").write_text("{}")
        assert not (out / "results.json").exists()  # nothing shows before the end
    assert sorted(p.name for p in out.iterdir()) == ["frames", "masks", "mine.txt", "results.json"]
    assert [p.name for p in (out / "frames").iterdir()] == ["00000.jpg"] and (out / "masks").is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(ValueError):
        with StagedOutput(out, overwrite=True) as tmp:
            (tmp / "results.json").write_text("half")
            raise ValueError("boom")
    assert (out / "results.json").read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("fail_at", [1, 3, 5])
def test_overwrite_that_fails_while_swapping_in_keeps_the_earlier_outputs(tmp_path, monkeypatch, fail_at):
    """A failure at any step of moving the new outputs in (a full disk, a folder that went
    away) undoes the steps before it: the earlier outputs stay as they were, and the command
    reports the problem (CLIError)."""
    import os

    from sam2kit.cli.common import CLIError, StagedOutput

    out = tmp_path / "out"
    (out / "frames").mkdir(parents=True)
    (out / "frames" / "00000.jpg").write_text("old frame")
    for name in ("results.json", "mask_00.png", "mask_01.png", "mine.txt"):
        (out / name).write_text(f"old {name}")
    before = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    real_rename, calls = os.rename, []

    def flaky_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == fail_at:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    with pytest.raises(CLIError, match="No space left on device"):
        with StagedOutput(out, overwrite=True, stale=r"mask_\d+\.png") as tmp:
            (tmp / "frames").mkdir()
            (tmp / "frames" / "00000.jpg").write_text("new frame")
            (tmp / "results.json").write_text("new")
            (tmp / "mask_00.png").write_text("new mask")
            monkeypatch.setattr(os, "rename", flaky_rename)
    monkeypatch.setattr(os, "rename", real_rename)
    assert len(calls) >= fail_at  # (the undoing renames come after the failed one)
    after = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no partial or trash folder left


# ---- video ---------------------------------------------------------------------------------

def frame_file_path(results: dict):
    """(kind, frame, ext) -> the file's path in a run's folder, by the layout results.json
    states: flat (a file run: frames/00012.jpg) or, for a live run, sharded by thousands
    (frames/000/000/00012.jpg)."""
    sharded = results.get("layout", {}).get("kind") == "sharded"

    def path(kind: str, f: int, ext: str) -> str:
        folder = f"{kind}/{f // 1000000:03d}/{f // 1000 % 1000:03d}" if sharded else kind
        return f"{folder}/{f:05d}.{ext}"
    return path


def check_video_outputs(out: Path, frames: list[int], obj_ids: list[int], w: int, h: int, fps) -> dict:
    """Every file of a video run, and that results.json (with a live run, its frames.jsonl)
    matches the masks."""
    r = json.loads((out / "results.json").read_text())
    names = [f"{f:05d}" for f in frames]
    files = ["frames", "masks", "overlay.mp4", "overlays", "results.json"]
    if "frames_file" in r:  # a live run: one line per frame instead of a list in results.json
        assert "frames" not in r
        files.append(r["frames_file"])
        r = {**r, "frames": [json.loads(line) for line in (out / r["frames_file"]).read_text().splitlines()]}
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    sub = frame_file_path(r)  # (a live run's layout is sharded)
    for kind in ("frames", "overlays"):
        assert sorted(p.stem for p in (out / kind).rglob("*") if p.is_file()) == sorted(names)
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted([*map(str, obj_ids), "palette"])
    assert [fr["frame"] for fr in r["frames"]] == sorted(frames)
    assert r["tracking"]["complete"] and r["totals"]["frames"] == len(frames)
    assert [o["id"] for o in r["objects"]] == obj_ids
    for fr in r["frames"]:
        f = fr["frame"]
        assert fr["file"] == sub("frames", f, "jpg")
        assert png(out / sub("frames", f, "jpg")).size == (w, h)
        assert png(out / sub("overlays", f, "jpg")).size == (w, h)
        pal = png(out / sub("masks/palette", f, "png"))
        assert pal.mode == "P" and pal.size == (w, h) and pal.getpalette()[:12] == davis_palette()[:12]
        labels = np.array(pal)
        masks = []
        for k, (obj_id, entry) in enumerate(zip(obj_ids, fr["objects"])):
            m = png(out / sub(f"masks/{obj_id}", f, "png"))
            assert m.mode == "L" and m.size == (w, h) and set(np.unique(np.array(m))) <= {0, 255}
            mask = np.array(m) > 0
            masks.append(mask)
            assert entry["id"] == obj_id and isinstance(entry["object_score"], float)
            assert {k2: entry[k2] for k2 in ("area", "area_fraction", "bbox_xyxy")} == mask_stats(mask)
        masks = np.stack(masks)
        assert np.array_equal(labels > 0, masks.any(0))
        only = masks.sum(0) == 1
        assert np.array_equal(labels[only], masks.argmax(0)[only] + 1)
    with av.open(str(out / "overlay.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert s.average_rate == fps
        assert (s.codec_context.width, s.codec_context.height) == (w + w % 2, h + h % 2)
        assert sum(1 for _ in c.decode(s)) == len(frames)
    data = (out / "overlay.mp4").read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # +faststart: plays while loading
    return r


def test_video_default_prompt_through_the_hub(hub, clip, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "video", clip, "-o", out, *RES)
    assert rc == 0, err
    assert ("HEAD", f"/{REPO}/resolve/main/{FILE}") in hub.requests
    r = check_video_outputs(out, list(range(6)), [1], 128, 96, 30)
    (p,) = r["prompts"]  # a 3x3 grid spanning the central tenth of frame 0, object 1
    assert p["frame"] == 0 and p["object"] == 1 and p["labels"] == [1] * 9
    assert sorted({x for x, _ in p["points"]}) == [57.6, 64.0, 70.4]
    assert sorted({y for _, y in p["points"]}) == [43.2, 48.0, 52.8]
    assert r["video"]["fps"] == 30 and r["video"]["num_frames"] == 6 and r["resolution"] == 256
    assert r["frames_per_second"]["tracking"] > 0 and set(r["timings_s"]) >= {"tracking", "total"}
    assert r["totals"]["objects"][0]["frames_with_mask"] > 0
    assert "frame/s" in err or "s/frame" in err  # the progress bar with its rate
    assert "tracked" in stdout


def test_video_objects_boxes_folder_odd_size(ckpt, frame_folder, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "video", frame_folder, "-o", out, "--checkpoint", ckpt, *RES,
                          "--point", "0:60,45@2", "--point", "0:10,10:0@2", "--box", "2:5%,5%,50%,50%",
                          "--fps", "10", "--json")
    assert rc == 0, err
    r = json.loads(stdout)
    assert r == json.loads((out / "results.json").read_text())
    check_video_outputs(out, list(range(4)), [1, 2], 121, 91, 10)
    by_obj = {p["object"]: p for p in r["prompts"]}
    assert by_obj[1]["frame"] == 2 and by_obj[1]["box"] == [6.05, 4.55, 60.5, 45.5]
    assert by_obj[2]["points"] == [[60, 45], [10, 10]] and by_obj[2]["labels"] == [1, 0]
    assert r["tracking"]["start_frame"] == 0 and r["video"]["fps"] is None


def test_video_reverse_start_and_max_frames(ckpt, clip, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "video", clip, "-o", out, "--checkpoint", ckpt, *RES, "-q",
                     "--point", "5:64,48", "--reverse", "--max-frames", "3")
    assert rc == 0 and err == ""
    r = check_video_outputs(out, [3, 4, 5], [1], 128, 96, 30)
    assert r["tracking"]["start_frame"] == 5 and r["tracking"]["reverse"] is True
    # the mp4 runs forward in time although the frames were tracked backward
    overlays = [np.asarray(png(out / "overlays" / f"{f:05d}.jpg"), np.float32) for f in (3, 4, 5)]
    with av.open(str(out / "overlay.mp4")) as c:
        decoded = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]
    assert len(decoded) == 3
    for i, d in enumerate(decoded):
        errors = [np.abs(d - o).mean() for o in overlays]
        assert int(np.argmin(errors)) == i and errors[i] < 8, errors


def test_failure_while_tracking_leaves_nothing(ckpt, clip, tmp_path, capsys, monkeypatch):
    from sam2kit.jobs import video

    calls = []

    def failing_write(self, f, frame, logits):
        calls.append(f)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(self, f, frame, logits)

    original = video.FrameWriter.write
    monkeypatch.setattr(video.FrameWriter, "write", failing_write)
    out = tmp_path / "deep" / "out"
    rc, _, err = cli(capsys, "video", clip, "-o", out, "--checkpoint", ckpt, *RES, "-q")
    assert rc == 1 and "No space left on device" in err and len(calls) == 2
    assert not (tmp_path / "deep").exists()  # not even the parent folder it made


def test_interrupt_leaves_nothing(ckpt, photo, tmp_path, capsys, monkeypatch):
    from sam2kit.jobs import image as image_job

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(image_job, "predict_all", interrupted)
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "image", photo, "-o", out, "--checkpoint", ckpt, *RES, "-q")
    assert rc == 130 and "interrupted" in err and nothing_written(out)


# ---- models and demo -----------------------------------------------------------------------

def test_models_list_and_download(hub, tmp_path, capsys):
    rc, stdout, err = cli(capsys, "models", "--json")
    assert rc == 0, err
    rows = json.loads(stdout)["models"]
    assert [r["name"] for r in rows] == list(sam2kit.CONFIGS)
    tiny = rows[0]
    assert tiny["parameters"] == pytest.approx(38.9e6, rel=0.01) and not tiny["cached"]
    assert rows[7]["parameters"] == pytest.approx(224.4e6, rel=0.01)  # sam2.1-hiera-large
    assert tiny["download_bytes_approx"] == pytest.approx(156e6, rel=0.01)

    rc, stdout, err = cli(capsys, "models", "download", "tiny")
    assert rc == 0, err
    path = Path(stdout.strip())
    assert path.is_file() and path.name == FILE and str(hub.cache_dir) in str(path)
    assert "downloaded" in err
    rc, stdout, err = cli(capsys, "models", "download", "facebook/sam2-hiera-tiny")
    assert rc == 0 and Path(stdout.strip()) == path and "already cached" in err

    rc, stdout, err = cli(capsys, "models")
    assert rc == 0, err
    line = next(s for s in stdout.splitlines() if s.startswith("sam2-hiera-tiny "))
    assert str(path) in line and "38.9M" in line
    assert next(s for s in stdout.splitlines() if s.startswith("sam2.1-hiera-tiny ")).endswith(" no")


def test_models_download_errors(hub_standin, capsys, monkeypatch):
    rc, _, err = cli(capsys, "models", "download", "huge")
    assert_one_line_error(rc, err, "unknown model 'huge'", "tiny, small, base-plus or large")
    rc, _, err = cli(capsys, "models", "download", "small", "--sam2.1", "-q")  # not on the stand-in
    assert_one_line_error(rc, err, "facebook/sam2.1-hiera-small")
    set_offline(monkeypatch)
    rc, _, err = cli(capsys, "models", "download", "tiny")
    assert_one_line_error(rc, err, "offline", "hf download")


def test_demo(ckpt, tmp_path, capsys):
    out = tmp_path / "demo"
    rc, stdout, err = cli(capsys, "demo", "-o", out, "--checkpoint", ckpt, *RES, "--max-frames", "3")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["image", "video"]
    assert len(list((out / "image").glob("mask_*.png"))) == 9
    r = check_video_outputs(out / "video", [0, 1, 2], [1], 640, 360, 25)
    assert r["video"]["path"].endswith("sample_video.mp4") and r["video"]["num_frames"] == 75
    assert "demo outputs in" in stdout and "first 3 frames" in err


# ---- bad input: a one-line message, exit status 2, nothing written -----------------------

def corrupt_files(tmp_path: Path, clip: Path) -> dict[str, Path]:
    files = {}
    files["truncated.png"] = tmp_path / "truncated.png"
    Image.fromarray(synthetic_image(64, 64)).save(files["truncated.png"])
    data = files["truncated.png"].read_bytes()
    files["truncated.png"].write_bytes(data[: len(data) // 2])
    files["junk.jpg"] = tmp_path / "junk.jpg"
    files["junk.jpg"].write_bytes(b"not a picture at all\n" * 20)
    files["cut.mp4"] = tmp_path / "cut.mp4"
    files["cut.mp4"].write_bytes(clip.read_bytes()[:600])
    files["junk.mkv"] = tmp_path / "junk.mkv"
    files["junk.mkv"].write_bytes(b"this is not a video\n" * 50)
    files["notes.txt"] = tmp_path / "notes.txt"
    files["notes.txt"].write_text("hello")
    files["sound.mkv"] = write_audio_only(tmp_path / "sound.mkv")
    files["empty.mkv"] = write_no_frames(tmp_path / "empty.mkv", 64, 48, 25)  # a video stream, no frame
    return files


BAD_MEDIA = [
    ("image", "missing.png", ["does not exist", "check the path"]),
    ("image", "truncated.png", ["cannot read image", "damaged or incomplete"]),
    ("image", "junk.jpg", ["not an image format", "give a png"]),
    ("image", ".", ["is a folder, not an image"]),
    ("video", "missing.mp4", ["does not exist", "check the path"]),
    ("video", "cut.mp4", ["cannot decode video", "complete video file"]),
    ("video", "junk.mkv", ["cannot decode video"]),
    ("video", "notes.txt", ["cannot read", "as a video", "use a video ffmpeg reads"]),
    ("video", "sound.mkv", ["no video stream"]),
    ("video", "empty.mkv", ["has no frames"]),
    ("video", "truncated.png", ["single image, not a video", "sam2kit image"]),
]


@pytest.mark.parametrize("command,name,needles", BAD_MEDIA, ids=[f"{c}-{n}" for c, n, _ in BAD_MEDIA])
def test_bad_media(command, name, needles, ckpt, clip, tmp_path, capsys):
    media = tmp_path / "media"
    media.mkdir()
    files = corrupt_files(media, clip)
    path = files.get(name, media / name)
    out = tmp_path / "out"
    rc, _, err = cli(capsys, command, path, "-o", out, "--checkpoint", ckpt, *RES)
    assert_one_line_error(rc, err, *needles)
    assert nothing_written(out)


def test_unreadable_image_and_video(ckpt, photo, clip, tmp_path, capsys, monkeypatch):
    locked = {"image": tmp_path / "locked.png", "video": tmp_path / "locked.mp4"}
    locked["image"].write_bytes(photo.read_bytes())
    locked["video"].write_bytes(clip.read_bytes())
    for p in locked.values():
        p.chmod(0)
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # root reads anything: pretend it cannot
        import PIL.Image

        from sam2kit.jobs import video

        def no_access(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(PIL.Image, "open", no_access)
        monkeypatch.setattr(video.os, "access", lambda *a, **k: False)
    for command, path in locked.items():
        out = tmp_path / f"out-{command}"
        rc, _, err = cli(capsys, command, path, "-o", out, "--checkpoint", ckpt)
        assert_one_line_error(rc, err, f"cannot read {command}", "permission denied")
        assert nothing_written(out)


def test_video_without_pyav(ckpt, frame_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` fail
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "video", frame_folder, "-o", out, "--checkpoint", ckpt)
    assert_one_line_error(rc, err, "PyAV is needed", "pip install av")
    assert nothing_written(out)


def test_damaged_frame_while_tracking(ckpt, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, f in enumerate(moving_frames(3, 64, 48)):
        Image.fromarray(f).save(folder / f"{i:05d}.png")
    (folder / "00001.png").write_bytes(b"not a png")  # found only when tracking reaches it
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "video", folder, "-o", out, "--checkpoint", ckpt, *RES, "-q")
    assert_one_line_error(rc, err, "cannot read frame image", "00001.png", "--max-frames")
    assert nothing_written(out)


BAD_PROMPTS = [
    ("image", ["--point", "170,20"], ["(170, 20) is outside the image", "160x120"]),
    ("image", ["--point", "50%,101%"], ["outside the image"]),
    ("image", ["--box", "10,10,200,50"], ["--box 10,10,200,50", "outside the image"]),
    ("image", ["--box", "50,50,10,80"], ["the box is empty", "x0 < x1"]),
    ("image", ["--grid", "2x2", "--point", "5,5"], ["--grid cannot be combined"]),
    ("image", ["--point", "5,5", "--box", "0,0,9,9", "--box", "1,1,9,9"], ["at most one --box"]),
    ("video", ["--point", "6:10,10"], ["frame 6 is past the end", "6 frames (0 to 5)"]),
    ("video", ["--box", "99:1,1,5,5"], ["frame 99 is past the end"]),
    ("video", ["--point", "0:129,10"], ["outside the frame"]),
    ("video", ["--box", "0:1,1,5,5", "--box", "0:2,2,6,6"], ["already has a box"]),
    ("video", ["--start-frame", "6"], ["--start-frame 6 is past the end"]),
    ("video", ["--point", "0:10,10", "--reverse"], ["--reverse", "nothing to track"]),
]


@pytest.mark.parametrize("command,extra,needles", BAD_PROMPTS, ids=[" ".join(e) for _, e, _ in BAD_PROMPTS])
def test_prompt_outside_the_picture_or_video(command, extra, needles, ckpt, photo, clip, tmp_path, capsys):
    out = tmp_path / "out"
    src = photo if command == "image" else clip
    rc, _, err = cli(capsys, command, src, "-o", out, "--checkpoint", ckpt, *RES, *extra)
    assert_one_line_error(rc, err, *needles)
    assert nothing_written(out)


MALFORMED = [
    ("image", ["--point", "12"], "argument --point: expected a point as X,Y[:LABEL]"),
    ("image", ["--point", "1,2:5"], "argument --point: expected a point"),
    ("image", ["--point", "a,b"], "argument --point"),
    ("image", ["--box", "1,2,3"], "argument --box: expected a box as X0,Y0,X1,Y1"),
    ("image", ["--grid", "3by3"], "argument --grid: expected ROWSxCOLS"),
    ("image", ["--grid", "0x3"], "argument --grid"),
    ("video", ["--point", "10,20"], "argument --point: expected a point as FRAME:X,Y"),
    ("video", ["--point", "0:10,20@0"], "object numbers run from 1 to 255"),
    ("video", ["--point", "-1:10,20"], "argument --point"),
    ("video", ["--box", "0:1,2,3,4@x"], "argument --box: expected a box as FRAME:X0,Y0,X1,Y1"),
    ("video", ["--max-frames", "0"], "argument --max-frames: expected a positive whole number"),
    ("video", ["--fps", "fast"], "argument --fps"),
    ("image", ["--resolution", "300"], "argument --resolution: expected a multiple of 32"),
    ("image", ["--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("command,extra,needle", MALFORMED, ids=[" ".join(e) for _, e, _ in MALFORMED])
def test_malformed_arguments(command, extra, needle, photo, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, command, photo, "-o", out, *extra)
    assert_one_line_error(rc, err, needle, "--help")
    assert nothing_written(out)


def test_bad_model_choices(ckpt, photo, tmp_path, capsys):
    out = tmp_path / "out"
    cases = [
        (["--model", "huge"], ["unknown model 'huge'", "sam2kit models"]),
        (["--model", "facebook/sam-vit-huge"], ["unknown model"]),
        (["--model", "missing.pt"], ["checkpoint file 'missing.pt' does not exist"]),
        (["--checkpoint", "missing.pt"], ["checkpoint file 'missing.pt' does not exist"]),
        (["--model", "sam2-hiera-small", "--sam2.1"], ["sam2.1-hiera-small"]),
        (["--model", str(ckpt), "--checkpoint", str(ckpt)], ["not both"]),
        (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], ["device"]),
        (["--model", "small", "--checkpoint", str(ckpt)], ["does not fit sam2-hiera-small",
                                                           "sam2-hiera-tiny checkpoint"]),
    ]
    for extra, needles in cases:
        rc, _, err = cli(capsys, "image", photo, "-o", out, *extra, *RES)
        assert_one_line_error(rc, err, *needles)
        assert nothing_written(out), extra


def test_no_checkpoint_offline(hub_standin, photo, clip, tmp_path, capsys, monkeypatch):
    set_offline(monkeypatch)
    for command, src in (("image", photo), ("video", clip), ("demo", None)):
        out = tmp_path / command
        rc, _, err = cli(capsys, command, *([src] if src else []), "-o", out, *RES)
        assert_one_line_error(rc, err, "not in the local cache", "offline", "--checkpoint FILE")
        assert nothing_written(out)
    assert hub_standin.requests == []


def test_output_not_a_folder_or_not_empty(ckpt, photo, tmp_path, capsys):
    afile = tmp_path / "taken"
    afile.write_text("x")
    rc, _, err = cli(capsys, "image", photo, "-o", afile, "--checkpoint", ckpt)
    assert_one_line_error(rc, err, "is not a folder")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    for command in ("image", "video", "demo"):
        args = [photo] if command == "image" else []
        rc, _, err = cli(capsys, command, *args, "-o", busy, "--checkpoint", ckpt)
        assert_one_line_error(rc, err, "is not empty", "--overwrite")
    assert [p.name for p in busy.iterdir()] == ["keep.txt"] and afile.read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "taken"]


# ---- as a program ----------------------------------------------------------------------------

def run_program(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sam2kit", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_program_exit_status_and_streams(ckpt, photo, tmp_path):
    out = tmp_path / "out"
    bad = run_program("image", tmp_path / "nope.png", "-o", out)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        f"sam2kit: error: image {str(tmp_path / 'nope.png')!r} does not exist; check the path"]
    assert not out.exists()
    good = run_program("image", photo, "-o", out, "--checkpoint", ckpt, *RES, "--json", "-q",
                       "--point", "80,60")
    assert good.returncode == 0 and good.stderr == ""
    assert json.loads(good.stdout)["prompts"][0]["points"] == [[80, 60]]
    assert (out / "mask_00.png").is_file()
    usage = run_program()
    assert usage.returncode == 2 and "sam2kit image" in usage.stderr
    assert run_program("--version").stdout.strip() == f"sam2kit {sam2kit.__version__}"
