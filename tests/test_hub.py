"""Checkpoints from the Hugging Face hub, through the real huggingface_hub download code.

There is no internet here: every test talks to a local stand-in for the hub
(tests/hub_standin.py, fixture ``hub_standin``) that serves a random tiny checkpoint made in the
test session. Each test has an empty hub cache of its own.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sam2kit
from conftest import synthetic_image
from hub_standin import set_offline
from sam2kit import CheckpointNotFoundError, SAM2ImagePredictor
from sam2kit.build import build_model
from sam2kit.hub import cached_checkpoint

TINY = sam2kit.get_config("sam2-hiera-tiny")
REPO = TINY.hub_id                 # facebook/sam2-hiera-tiny
FILE = TINY.checkpoint_file        # sam2_hiera_tiny.pt
MARKER = "no_mem_embed"            # the parameter the "v2" checkpoint sets to a constant
MARKER_VALUE = 0.25


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """A random sam2-hiera-tiny checkpoint in the official layout ({"model": state_dict})."""
    torch.manual_seed(1234)
    model = build_model(TINY)
    path = tmp_path_factory.mktemp("ckpt") / "random_sam2_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def served_state_dict(random_checkpoint):
    return torch.load(random_checkpoint, map_location="cpu", weights_only=True, mmap=True)["model"]


@pytest.fixture(scope="session")
def v2_checkpoint(served_state_dict, tmp_path_factory):
    """Another revision's file: the same weights in float16, with MARKER set to MARKER_VALUE."""
    sd = {k: (v.half() if v.is_floating_point() else v.clone()) for k, v in served_state_dict.items()}
    sd[MARKER] = torch.full_like(sd[MARKER], MARKER_VALUE)
    path = tmp_path_factory.mktemp("ckpt_v2") / "v2.pt"
    torch.save({"model": sd}, path)
    return path


def assert_weights_equal(model, state_dict, skip=()):
    params = dict(model.named_parameters())
    assert set(params) <= set(state_dict)
    for name, p in params.items():
        if name not in skip:
            assert torch.equal(p.detach(), state_dict[name].float()), name


def hub_requests(hub, method=None):
    return [(m, p) for m, p in hub.requests if method in (None, m)]


# ---- downloads ---------------------------------------------------------------------------


def test_from_pretrained_downloads_from_the_hub(hub_standin, random_checkpoint, served_state_dict):
    hub = hub_standin
    commit = hub.add(REPO, FILE, random_checkpoint)

    predictor = SAM2ImagePredictor.from_pretrained(REPO, image_size=256)

    # the real huggingface_hub path: HEAD on /resolve (302 to the "CDN", as for LFS files), GET there
    assert hub.requests[0] == ("HEAD", f"/{REPO}/resolve/main/{FILE}")
    gets = hub_requests(hub, "GET")
    assert len(gets) == 1 and gets[0][1].startswith("/lfs/")
    # it landed in the (test's own) hub cache, under the served commit
    snapshot = hub.cache_dir / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit / FILE
    assert snapshot.is_file()
    assert snapshot.read_bytes() == random_checkpoint.read_bytes()
    assert cached_checkpoint(TINY) == snapshot

    model = predictor.model
    assert model.config.name == "sam2-hiera-tiny" and model.image_size == 256
    assert_weights_equal(model, served_state_dict)

    image = synthetic_image(96, 128, 0)
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(point_coords=np.array([[60.0, 40.0]]),
                                              point_labels=np.array([1]))
    assert masks.shape == (3, 96, 128) and scores.shape == (3,) and logits.shape == (3, 64, 64)
    assert np.isfinite(logits).all() and np.isfinite(scores).all()


def test_second_load_comes_from_the_cache(hub_standin, random_checkpoint, served_state_dict,
                                          monkeypatch):
    hub = hub_standin
    hub.add(REPO, FILE, random_checkpoint)
    SAM2ImagePredictor.from_pretrained(REPO, image_size=256)
    assert len(hub_requests(hub, "GET")) == 1

    # online again: only the HEAD that checks for a newer commit, no second download
    n = len(hub.requests)
    SAM2ImagePredictor.from_pretrained(REPO, image_size=256)
    assert hub.requests[n:] == [("HEAD", f"/{REPO}/resolve/main/{FILE}")]

    # offline: straight from the cache, the stand-in sees nothing at all
    set_offline(monkeypatch)
    n = len(hub.requests)
    predictor = SAM2ImagePredictor.from_pretrained(REPO, image_size=256)
    assert hub.requests[n:] == []
    assert_weights_equal(predictor.model, served_state_dict)


def test_missing_repo_names_the_hub_id_and_how_to_get_it(hub_standin):
    config = sam2kit.get_config("sam2.1-hiera-tiny")
    with pytest.raises(CheckpointNotFoundError) as info:
        sam2kit.build_sam2("sam2.1-hiera-tiny")
    msg = str(info.value)
    assert config.hub_id in msg and "hf download" in msg and config.checkpoint_file in msg
    # the question went to the stand-in, not to huggingface.co
    assert hub_standin.requests == [("HEAD", f"/{config.hub_id}/resolve/main/{config.checkpoint_file}")]


def test_offline_with_an_empty_cache_says_so(hub_standin, random_checkpoint, monkeypatch):
    hub_standin.add(REPO, FILE, random_checkpoint)  # served, but offline mode must not ask
    set_offline(monkeypatch)
    with pytest.raises(CheckpointNotFoundError) as info:
        sam2kit.build_sam2("sam2.1-hiera-tiny")
    msg = str(info.value)
    assert "offline" in msg.lower() and "HF_HUB_OFFLINE" in msg
    assert "facebook/sam2.1-hiera-tiny" in msg and "hf download" in msg
    with pytest.raises(CheckpointNotFoundError, match="offline"):
        SAM2ImagePredictor.from_pretrained(REPO, image_size=256)
    assert hub_standin.requests == []


def test_missing_file_in_a_known_repo(hub_standin):
    hub_standin.add(REPO, "README.md", b"# not the checkpoint\n")
    with pytest.raises(CheckpointNotFoundError) as info:
        sam2kit.build_sam2("sam2-hiera-tiny")
    msg = str(info.value)
    assert REPO in msg and FILE in msg and "local checkpoint path" in msg


# ---- revisions ---------------------------------------------------------------------------


def test_revision_picks_that_revisions_file(hub_standin, random_checkpoint, served_state_dict,
                                            v2_checkpoint):
    hub = hub_standin
    hub.add(REPO, FILE, random_checkpoint)
    commit_v2 = hub.add(REPO, FILE, v2_checkpoint, revision="v2", lfs=False)  # served directly

    model = sam2kit.build_sam2("sam2-hiera-tiny", revision="v2", image_size=256)
    assert torch.all(getattr(model, MARKER) == MARKER_VALUE)
    assert getattr(model, MARKER).dtype == torch.float32  # float16 file, float32 model
    half = {k: v.half() for k, v in served_state_dict.items() if v.is_floating_point()}
    assert_weights_equal(model, half, skip={MARKER})
    assert hub.requests == [("HEAD", f"/{REPO}/resolve/v2/{FILE}"), ("GET", f"/{REPO}/resolve/v2/{FILE}")]
    repo_cache = hub.cache_dir / f"models--{REPO.replace('/', '--')}"
    assert (repo_cache / "refs" / "v2").read_text() == commit_v2

    # main is still main, in the same cache
    model = sam2kit.build_sam2("sam2-hiera-tiny", image_size=256)
    assert_weights_equal(model, served_state_dict)
    assert not torch.all(getattr(model, MARKER) == MARKER_VALUE)


def test_missing_revision_names_it(hub_standin, random_checkpoint):
    hub_standin.add(REPO, FILE, random_checkpoint)
    with pytest.raises(CheckpointNotFoundError) as info:
        sam2kit.build_sam2("sam2-hiera-tiny", revision="v3")
    msg = str(info.value)
    assert "'v3'" in msg and "revision" in msg and REPO in msg
    with pytest.raises(CheckpointNotFoundError, match="v3"):
        SAM2ImagePredictor.from_pretrained(REPO, revision="v3")
    assert all(m == "HEAD" for m, _ in hub_standin.requests)


# ---- local files ---------------------------------------------------------------------------


def test_local_checkpoint_path(hub_standin, random_checkpoint, served_state_dict):
    # a path alone: the config is identified from the file's keys and shapes
    predictor = SAM2ImagePredictor.from_pretrained(str(random_checkpoint), image_size=256)
    assert predictor.model.config.name == "sam2-hiera-tiny" and predictor.model.image_size == 256
    assert_weights_equal(predictor.model, served_state_dict)
    # a model name plus a file
    predictor = SAM2ImagePredictor.from_pretrained("sam2-hiera-tiny", checkpoint=random_checkpoint,
                                                   image_size=256)
    assert_weights_equal(predictor.model, served_state_dict)
    assert hub_standin.requests == []  # local files never touch the hub


def test_missing_local_checkpoint_path(hub_standin, tmp_path):
    missing = tmp_path / "nowhere" / "sam2_hiera_tiny.pt"
    with pytest.raises(CheckpointNotFoundError) as info:
        SAM2ImagePredictor.from_pretrained(str(missing))
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        sam2kit.build_sam2("sam2-hiera-tiny", checkpoint=missing)
    assert hub_standin.requests == []


# ---- the stand-in itself ---------------------------------------------------------------------


def test_standin_speaks_the_hub_protocol(hub_standin):
    import urllib.error
    import urllib.request

    hub = hub_standin
    data = bytes(range(256)) * 4
    commit = hub.add("org/repo", "sub/dir/file.txt", data, revision="v1")

    def call(path, method="GET", headers=None):
        req = urllib.request.Request(hub.url + path, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    status, headers, body = call("/org/repo/resolve/v1/sub/dir/file.txt", "HEAD")
    assert status == 200 and body == b"" and headers["X-Repo-Commit"] == commit
    assert headers["Content-Length"] == str(len(data)) and len(headers["ETag"].strip('"')) == 64
    assert call(f"/org/repo/resolve/{commit}/sub/dir/file.txt")[2] == data  # a commit names its revision
    status, headers, body = call("/org/repo/resolve/v1/sub/dir/file.txt", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20] and headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert call("/org/repo/resolve/v1/sub/dir/file.txt", headers={"Range": "bytes=-5"})[2] == data[-5:]
    assert call("/org/repo/resolve/v1/sub/dir/file.txt", headers={"Range": "bytes=5000-"})[0] == 416
    for path, code in [("/org/other/resolve/v1/f", "RepoNotFound"),
                       ("/org/repo/resolve/main/sub/dir/file.txt", "RevisionNotFound"),
                       ("/org/repo/resolve/v1/nope.txt", "EntryNotFound")]:
        status, headers, _ = call(path, "HEAD")
        assert (status, headers["X-Error-Code"]) == (404, code), path
    assert len(hub.requests) == 8 and hub.url.startswith("http://127.0.0.1:")
