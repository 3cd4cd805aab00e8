"""sam2kit.batch without a model: which items inputs and manifests give (keys, prompts, clashes),
the ledger's state changes, and the settings hash. Real files in a temporary folder; no model
is loaded, so the whole file takes a second or two."""

from __future__ import annotations

import json
import sqlite3

import pytest

from sam2kit.batch import InputError, Ledger, discover, read_manifest
from sam2kit.batch.items import Item, check_unique
from sam2kit.batch.runner import item_hash, settings_of
from sam2kit.batch.worker import encode_coco
from sam2kit.jobs.image import ImageJob
from sam2kit.cli.batch import typed
from sam2kit.jobs.items import ItemPrompts, for_item
from sam2kit.jobs.prompts import image_point
from sam2kit.jobs.video import VideoJob


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tree(tmp_path):
    """photos/{a.jpg, b.PNG, sub/c.png, notes.txt, .hidden/d.png, .e.png};
    clips/{x.mp4, seq/00000.jpg, seq/00001.jpg, more/y.webm}"""
    for p in ["photos/a.jpg", "photos/b.PNG", "photos/sub/c.png", "photos/notes.txt",
              "photos/.hidden/d.png", "photos/.e.png", "clips/x.mp4", "clips/seq/00000.jpg",
              "clips/seq/00001.jpg", "clips/more/y.webm"]:
        touch(tmp_path / p)
    return tmp_path


def keys(items):
    return [it.key for it in items]


def test_folders_files_and_globs(tree):
    assert keys(discover([str(tree / "photos")], "image")) == ["a.jpg", "b.PNG", "sub/c.png"]
    items = discover([str(tree / "photos/sub/c.png")], "image")
    assert keys(items) == ["c.png"] and items[0].source == str(tree / "photos/sub/c.png")
    assert keys(discover([str(tree / "photos/*/*.png")], "auto")) == ["sub/c.png"]
    assert keys(discover([str(tree / "photos/*.jpg"), str(tree / "photos/sub")], "image")) == ["a.jpg", "c.png"]
    # video: files and frame folders, keyed from the root; a frame folder given directly by name
    assert keys(discover([str(tree / "clips")], "video")) == ["more/y.webm", "seq", "x.mp4"]
    assert keys(discover([str(tree / "clips/seq")], "video")) == ["seq"]


def test_output_folder_inside_an_input_is_skipped(tree):
    touch(tree / "photos/out/a.jpg/mask_00.png")
    assert "out/a.jpg/mask_00.png" in keys(discover([str(tree / "photos")], "image"))
    assert keys(discover([str(tree / "photos")], "image", exclude=str(tree / "photos/out"))) == \
        ["a.jpg", "b.PNG", "sub/c.png"]


def test_inputs_that_name_nothing_or_clash(tree):
    with pytest.raises(InputError, match="does not exist"):
        discover([str(tree / "nope")], "image")
    with pytest.raises(InputError, match="holds no images"):
        discover([str(tree / "clips/more")], "image")
    with pytest.raises(InputError, match="would both be written to OUT/a.jpg"):
        discover([str(tree / "photos/a.jpg"), str(tree / "photos/a.jpg")], "image")
    with pytest.raises(InputError, match="not a place for it"):
        check_unique([Item("annotations.json", "/x/annotations.json")])


def test_image_manifest_prompts_become_the_jobs_prompts(tmp_path):
    m = tmp_path / "m.jsonl"
    lines = [{"path": "a.jpg", "points": [[10, 20.5], [-0.25, "50%"]], "labels": [1, 0], "box": [1, 2, 30, 40]},
             {"path": "sub/b.png", "boxes": [[1, 2, 3, 4], [5, 6, 7, 8]]},
             {"path": "/data/c.png", "grid": "4x4"},
             {"path": "s3://bucket/d.png", "output": "d"}, {"path": "e.png"}]
    m.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = {it.key: it for it in read_manifest(str(m), "image")}
    assert set(items) == {"a.jpg", "sub/b.png", "data/c.png", "d", "e.png"}
    assert items["a.jpg"].prompts.texts() == ["--point=10,20.5:1", "--point=-0.25,50%:0", "--box=1,2,30,40"]
    assert items["a.jpg"].source == str(tmp_path / "a.jpg")
    assert items["sub/b.png"].prompts.texts() == ["--box=1,2,3,4", "--box=5,6,7,8"]
    assert items["data/c.png"].prompts.grid == (4, 4) and items["e.png"].prompts is None
    assert items["d"].source == "s3://bucket/d.png"
    # parsed as the command parses them (negative numbers too), they replace the default prompt
    job = for_item(ImageJob(grid=(3, 3)), "a.jpg", items["a.jpg"].prompts)
    assert job.grid is None and [p.text for p in job.point] == ["10,20.5:1", "-0.25,50%:0"]
    assert [(p.x.value, p.y.percent, p.label) for p in job.point] == [(10.0, False, 1), (-0.25, True, 0)]
    assert str(job.image) == "a.jpg" and len(job.box) == 1


def test_video_manifest_and_malformed_lines(tmp_path):
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"path": "clip.mp4", "prompts": [
        {"frame": 3, "object": 2, "points": [[5, 6]], "labels": [0]},
        {"box": [1, 2, 3, 4]}]}) + "\n")
    (item,) = read_manifest(str(m), "video")
    assert item.prompts.texts() == ["--point=3:5,6:0@2", "--box=0:1,2,3,4@1"]
    ns = for_item(VideoJob(), "clip.mp4", item.prompts)
    assert [(p.frame, p.obj, p.label) for p in ns.point] == [(3, 2, 0)] and ns.box[0].frame == 0
    for line, message in [("{not json", "not JSON"), ('{"points": []}', 'with a "path"'),
                          ('{"path": "a.png", "points": [[1]]}', "a point must be a list of 2"),
                          ('{"path": "a.png", "points": [[1, 2]], "labels": [2]}', "labels"),
                          ('{"path": "a.png", "points": [[1, true]]}', "expected a number"),
                          ('{"path": "a.mp4", "points": [[1, 2]]}', 'video prompts go in "prompts"')]:
        m.write_text(line + "\n")
        with pytest.raises(InputError, match=message):
            read_manifest(str(m), "video" if "mp4" in line else "image")
    m.write_text('{"path": "a.png", "points": [[1, 2]]}\n')
    with pytest.raises(InputError, match="takes no prompts"):
        read_manifest(str(m), "auto")


def test_settings_hash_covers_outputs_not_hardware():
    def settings(task, options):  # the typed model and job, as sam2kit batch reads the options
        return settings_of(*typed(task, options))

    base = settings("image", ("--resolution=256", "--grid=3x3"))
    it = Item("a.jpg", "/a.jpg")
    same = [("--resolution=256", "--grid=3x3", "--device=cpu", "--compile")]
    other = [("--resolution=512", "--grid=3x3"), ("--resolution=256", "--grid=2x2"),
             ("--resolution=256", "--grid=3x3", "--single-mask"), ("--resolution=256", "--grid=3x3", "--int8"),
             ("--resolution=256", "--grid=3x3", "--model=small")]
    h = item_hash(base, it)
    assert all(item_hash(settings("image", o), it) == h for o in same)
    assert len({item_hash(settings("image", o), it) for o in other} | {h}) == len(other) + 1
    assert item_hash(settings("auto", ("--resolution=256",)), it) != item_hash(settings("image", ("--resolution=256",)), it)
    # an item's own prompt replaces the default one in its hash
    own = Item("a.jpg", "/a.jpg", ItemPrompts(point=(image_point("1,2:1"),)))
    assert item_hash(base, own) == item_hash(settings("image", ("--resolution=256", "--grid=2x2")), own) != h


def test_ledger_records_each_state_change(tmp_path):
    path = tmp_path / "batch.sqlite"
    led = Ledger(path)
    rows = led.add([Item("a", "/in/a"), Item("b", "/in/b")])
    assert [rows[k][:2] for k in "ab"] == [(1, "pending"), (2, "pending")]
    led.start(1, "w0")
    reader = Ledger(path, readonly=True)  # --status reads while the driver writes
    assert reader.counts() == {"done": 0, "failed": 0, "pending": 1, "running": 1}
    led.done(1, "h1", 0.5, "w0", coco=encode_coco({"image": {"id": 1}, "annotations": [{"id": 2}, {"id": 3}]}))
    led.start(2, "w0")
    led.fail(2, "bad", final=False)
    led.start(2, "w0")
    led.fail(2, "still bad", final=True)
    assert reader.counts() == {"done": 1, "failed": 1, "pending": 0, "running": 0}
    assert reader.failures() == [{"key": "b", "source": "/in/b", "attempts": 2, "error": "still bad"}]
    assert list(reader.coco_parts()) == [({"id": 1}, [{"id": 2}, {"id": 3}])]
    assert led.add([Item("b", "/moved/b")])["b"] == (2, "failed", None)  # same id, new source
    led.close()
    reader.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT source FROM items WHERE key = 'b'").fetchone()[0] == "/moved/b"
