"""``sam2kit serve``: a correction click on a frame already tracked is kept by the next
tracking (the frame becomes a conditioning frame, as SAM 2 is trained for corrections); with
the reference predictor's inference default the next propagation through that frame would
recompute it and drop the correction. Real server (random tiny checkpoint at 256), over HTTP.
"""

from __future__ import annotations

import json

import httpx
import pytest

from page_harness import Server, random_checkpoint


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_corrections")
    srv = Server(random_checkpoint(folder / "tiny.pt"), 256)
    yield srv
    srv.stop()


def track(client, session, frames: int) -> dict[int, list]:
    out = {}
    with client.stream("POST", f"api/videos/{session}/propagate", json={"start_frame": 0, "max_frames": frames}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            item = json.loads(line)
            if "frame" in item:
                out[item["frame"]] = item["objects"]
    return out


def test_correction_on_a_tracked_frame_is_kept_by_the_next_tracking(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        session = client.post("api/videos", json={"sample": "video"}).json()["session_id"]
        client.post(f"api/videos/{session}/prompts", json={"frame": 0, "object": 1, "points": [[320, 180]], "labels": [1]})
        first = track(client, session, 4)
        assert sorted(first) == [0, 1, 2, 3]

        r = client.post(f"api/videos/{session}/prompts",
                        json={"frame": 2, "object": 1, "points": [[100, 300]], "labels": [0], "clear_old": True})
        corrected = r.json()["objects"]
        assert corrected != first[2], "the correction changes the frame's mask"

        second = track(client, session, 4)
        assert second[2] == corrected, "the tracking keeps the corrected frame"
        assert second[3] != first[3], "and tracks on from it"
        assert client.get(f"api/videos/{session}/frames/2/masks").json()["objects"] == corrected
