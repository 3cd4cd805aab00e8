"""The nuclio function (serverless/sam2kit/nuclio/main.py) called as nuclio calls it: init_context
then handler(context, event) with CVAT's interactor body (cvat/apps/lambda_manager/views.py)."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import types
from pathlib import Path

import numpy as np
from PIL import Image

from sam2kit.image.predictor import SAM2ImagePredictor
from serve_helpers import moving_frames, random_checkpoint

MAIN = Path(__file__).parent.parent / "serverless" / "sam2kit" / "nuclio" / "main.py"


class FakeContext:
    """What a nuclio python handler uses: user_data, logger, Response(body, headers, content_type, status_code)."""

    def __init__(self):
        self.user_data = types.SimpleNamespace()
        self.logger = types.SimpleNamespace(info=lambda *a: None, error=lambda *a: None)
        self.Response = lambda **kw: types.SimpleNamespace(**kw)


def test_nuclio_handler(tmp_path, monkeypatch):
    ckpt = random_checkpoint(tmp_path / "t.pt")
    monkeypatch.setenv("SAM2KIT_MODEL", str(ckpt))
    monkeypatch.setenv("SAM2KIT_RESOLUTION", "256")
    spec = importlib.util.spec_from_file_location("sam2kit_nuclio_main", MAIN)
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    ctx = FakeContext()
    main.init_context(ctx)
    frame = moving_frames(1)[0]
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    body = {"image": base64.b64encode(buf.getvalue()).decode(), "pos_points": [[30, 48]], "neg_points": [[95, 30]],
            "obj_bbox": None}
    r = main.handler(ctx, types.SimpleNamespace(body=body))
    assert r.status_code == 200 and r.content_type == "application/json"
    got = np.array(json.loads(r.body)["mask"], dtype=bool)
    p = SAM2ImagePredictor.from_pretrained(str(ckpt), image_size=256)
    p.set_image(frame)
    masks, scores, _ = p.predict(np.array([[30, 48], [95, 30]]), np.array([1, 0]), multimask_output=True)
    assert np.array_equal(got, masks[np.argsort(scores)[::-1][0]] > 0.5)
    bad = main.handler(ctx, types.SimpleNamespace(body=json.dumps({**body, "pos_points": [[999, 1]]}).encode()))
    assert bad.status_code == 400 and "outside" in json.loads(bad.body)["error"]
    assert main.handler(ctx, types.SimpleNamespace(body=b"{")).status_code == 400
