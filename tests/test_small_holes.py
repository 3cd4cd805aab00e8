"""Small holes, provoked for real: an OpenVINO cache folder that cannot be written (a path
through a file, and a read-only mount), and a disk that fills up while a command writes its
outputs (a 4 MB tmpfs mounted for the test, filled up to a few KB: needs root, skipped
otherwise). The user gets one line naming the problem and the fix, and the files an earlier run
wrote stay as they were."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from conftest import synthetic_image
from sam2kit.cli import main


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *options: str):
    """A tmpfs of ``size`` at ``path`` for the test (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join((f"size={size}", *options))
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(synthetic_image(120, 160, 2)).save(path)
    return path


def test_an_unwritable_openvino_cache_is_a_clear_error(tiny_ckpt, photo, tmp_path, monkeypatch, capsys):
    pytest.importorskip("openvino")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ro = tmp_path / "ro"
    cases = [blocker / "cache"]
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:
            with contextlib.suppress(pytest.skip.Exception):
                cases.append(stack.enter_context(tmpfs(ro, "64k", "ro")) / "cache")
        for cache in cases:
            monkeypatch.setenv("SAM2KIT_OPENVINO_CACHE", str(cache))
            out = tmp_path / "out"
            capsys.readouterr()
            rc = main(["image", str(photo), "-o", str(out), "--model", str(tiny_ckpt), "--resolution", "256",
                       "--backend", "openvino", "-q"])
            err = capsys.readouterr().err.strip()
            assert rc == 2 and len(err.splitlines()) == 1, err
            assert f"the OpenVINO cache folder {str(cache)!r} cannot be written" in err
            assert "SAM2KIT_OPENVINO_CACHE" in err and "Traceback" not in err
            assert not out.exists()
    assert len(cases) == 2 or os.geteuid() != 0


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_full_disk_stops_the_run_and_keeps_what_was_written(tiny_ckpt, photo, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "4m") as disk:
        out = disk / "out"
        args = ["image", str(photo), "-o", str(out), "--model", str(tiny_ckpt), "--resolution", "256", "-q"]
        assert main(args) == 0
        before = digests(out)
        used = sum((out / name).stat().st_size for name in before)
        assert used > 20_000 and len(before) >= 10  # masks, the overview picture, results.json
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        with open(disk / "filler", "wb") as f:  # leave a quarter of what a run writes
            f.write(b"\0" * (free - used // 4))
        capsys.readouterr()
        rc = main([*args, "--overwrite", "--grid", "3x3"])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and "No space left on device" in err and "nothing was written" in err, err
        assert len(err.splitlines()) == 1
        assert digests(out) == before  # the earlier run's files: untouched, byte for byte
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "out"]  # no partial folder left
        (disk / "filler").unlink()
        assert main([*args, "--overwrite"]) == 0  # and once there is room, it works
