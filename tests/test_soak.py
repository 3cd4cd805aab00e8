"""The soak's short form (benchmarks/soak.py runs the 30-minute one): a real ``sam2kit serve``
at resolution 256 with mixed picture and video sessions for about a minute, sessions closed,
abandoned to expire (TTL 5 s) or pushed out by the LRU limits, RSS sampled every 2 s.

The bound: after the 30 s warm-up (by then every kind of job has run on both worker threads)
the highest RSS sample may exceed the warm-up's highest by at most BOUND_MB. At 256 px one
session's state is a few MB (its embeddings cache and results at 24 frames), and at most 3
sessions and 4 pictures are kept; BOUND_MB allows for glibc keeping freed blocks in its arenas
(the server tunes it to keep them, benchmarks/soak.py explains), not for growth with time:
a leak of even one session per cycle would pass it within the minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from soak import run_soak  # noqa: E402

BOUND_MB = 64.0


def test_soak_short_form_rss_stays_flat():
    # at least a minute and 3 load cycles (a busy machine takes longer for them; 15 min at most)
    result = run_soak(60.0, resolution=256, sample_s=2.0, warmup_s=30.0, ttl=5.0, log=lambda *_: None,
                      min_cycles=3, max_seconds=900.0)
    counts = result["counts"]
    assert counts["errors_5xx"] == 0, counts
    assert counts["cycles"] >= 3 and counts["abandoned"] >= 1 and counts["automatic"] >= 1, counts
    assert result["open_at_end"]["sessions"] <= 3 and result["open_at_end"]["images"] <= 4
    assert result["server_exit"] == 0
    assert result["growth_after_warmup_mb"] <= BOUND_MB, result["samples"]
