"""A real Label Studio server for tests: label-studio 1.23.2 from PyPI in its own venv
(``scripts/label-studio-env``), SQLite in a temporary folder, 127.0.0.1 on a free port, a user and a
legacy API token from the command line; and label_studio_sdk (inside that venv) to decode brush
masks. Without the venv the tests are skipped, or fail under ``CI=true``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

ENV = Path(os.environ.get("SAM2KIT_LABEL_STUDIO_ENV", Path.home() / ".cache" / "sam2kit-label-studio-env"))
PYTHON = ENV / "bin" / "python"
USER, PASSWORD = "tester@example.com", "sam2kit-test-pass"
TOKEN = "5a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b"
# a migrated database with the test user, made once by `label-studio init` and copied for each run
# (migrating a fresh SQLite database takes Label Studio minutes; starting on a copy, seconds)
TEMPLATE = ENV / "sam2kit-test-template" / "label_studio.sqlite3"


def need_label_studio() -> Path:
    if not (ENV / "bin" / "label-studio").is_file():
        problem = (f"no Label Studio venv at {ENV}: run scripts/label-studio-env (label-studio==1.23.2 in its "
                   "own venv; scripts/test runs it), or set SAM2KIT_LABEL_STUDIO_ENV")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return ENV


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """``label-studio start`` in a subprocess; ``api`` is an httpx client with the user's token."""

    def __init__(self, root: Path):
        need_label_studio()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = root / "ls-data"
        data.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, LATEST_VERSION_CHECK="false", ML_BLOCK_LOCAL_IP="false",
                   SSRF_PROTECTION_ENABLED="false", LABEL_STUDIO_BASE_DATA_DIR=str(data),
                   DJANGO_DB="sqlite", LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        for key in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
            env.pop(key, None)
        shutil.copyfile(template_db(root, env), data / "label_studio.sqlite3")
        self.log_path = root / "label-studio.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - open while the server runs, closed by stop()
        self.proc = subprocess.Popen(
            [str(ENV / "bin" / "label-studio"), "start", "--no-browser", "--data-dir", str(data),
             "--database", str(data / "label_studio.sqlite3"), "--internal-host", "127.0.0.1",
             "--port", str(self.port), "--username", USER, "--password", PASSWORD, "--user-token", TOKEN,
             "--enable-legacy-api-token"],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=root)
        self.api = httpx.Client(base_url=self.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=150)

    def wait(self, timeout: float = 600.0) -> None:
        """Until Label Studio answers the user's token (its first start migrates the database)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("label-studio exited:\n" + self.log)
            try:
                if self.api.get("/api/current-user/whoami").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"label-studio did not answer in {timeout:g} s:\n" + self.log)
            time.sleep(1.0)

    @property
    def log(self) -> str:
        return self.log_path.read_text()[-6000:]

    def stop(self) -> None:
        self.api.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    # ---- what a user does in the UI, through the API ----------------------------------------------

    def project(self, title: str, config: str) -> int:
        r = self.api.post("/api/projects", json={"title": title, "label_config": config})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def upload(self, project: int, path: Path, kind: str) -> dict:
        with open(path, "rb") as f:
            r = self.api.post(f"/api/projects/{project}/import", files={"file": (path.name, f, kind)})
        assert r.status_code == 201, r.text
        tasks = self.api.get("/api/tasks", params={"project": project}).json()["tasks"]
        return tasks[-1]

    def connect(self, project: int, url: str, **auth) -> httpx.Response:
        return self.api.post("/api/ml", json={"project": project, "url": url, "title": "sam2kit",
                                              "is_interactive": True, **auth})

    def interactive(self, ml: int, task: int, regions: list[dict]) -> dict:
        r = self.api.post(f"/api/ml/{ml}/interactive-annotating", json={"task": task, "context": {"result": regions}})
        assert r.status_code == 200, r.text
        return r.json()


def template_db(root: Path, env: dict) -> Path:
    """The migrated database with the test user and its legacy token (made on first use)."""
    if TEMPLATE.is_file():
        return TEMPLATE
    work = root / "ls-template"
    work.mkdir(exist_ok=True)
    db = work / "label_studio.sqlite3"
    subprocess.run([str(ENV / "bin" / "label-studio"), "init", "--data-dir", str(work), "--database", str(db),
                    "--username", USER, "--password", PASSWORD, "--user-token", TOKEN,
                    "--enable-legacy-api-token"], env={**env, "LABEL_STUDIO_BASE_DATA_DIR": str(work)},
                   cwd=root, check=True, timeout=900, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    TEMPLATE.parent.mkdir(exist_ok=True)
    partial = TEMPLATE.with_suffix(f".{os.getpid()}.part")
    shutil.copyfile(db, partial)
    os.replace(partial, TEMPLATE)  # (atomic: a concurrent run sees the whole file or none)
    return TEMPLATE


DECODE = """
import json, sys
import numpy as np
from label_studio_sdk.converter import brush
items = json.load(sys.stdin)
out = {}
for i, (rle, h, w) in enumerate(items):
    out[str(i)] = np.reshape(brush.decode_rle(rle), [h, w, 4])[:, :, 3]
np.savez(sys.argv[1], **out)
"""

ENCODE = """
import json, sys
import numpy as np
from label_studio_sdk.converter import brush
masks = np.load(sys.argv[1])
print(json.dumps([brush.mask2rle(masks[k].astype(np.uint8) * 255) for k in sorted(masks.files, key=int)]))
"""


def sdk_decode(items: list[tuple[list[int], int, int]], tmp: Path) -> list[np.ndarray]:
    """label_studio_sdk's own decoder (converter.brush.decode_rle) on (rle, height, width) items ->
    [H, W] bool masks (alpha > 0)."""
    out = tmp / "decoded.npz"
    subprocess.run([str(PYTHON), "-c", DECODE, str(out)], input=json.dumps(items), text=True, check=True)
    with np.load(out) as z:
        return [z[str(i)] > 0 for i in range(len(items))]


def sdk_encode(masks: list[np.ndarray], tmp: Path) -> list[list[int]]:
    """label_studio_sdk's mask2rle of each [H, W] bool mask (as 0/255 uint8)."""
    src = tmp / "masks.npz"
    np.savez(src, **{str(i): m for i, m in enumerate(masks)})
    done = subprocess.run([str(PYTHON), "-c", ENCODE, str(src)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)
