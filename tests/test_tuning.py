"""Kernel choices by measurement (sam2kit.kernels.tuning): measuring, the cache file, remeasuring,
processes sharing one measurement, and every candidate computing what the default computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2kit.kernels import tuning
from sam2kit.kernels.linear import linear_act
from sam2kit.modeling.mask_decoder import MaskDecoder
from sam2kit.kernels.attention import memory_attention_kernel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """Tuning on, with a cache file of this test's own and nothing decided yet."""
    path = tmp_path / "cache" / "tuning.json"
    monkeypatch.setenv("SAM2KIT_TUNING_FILE", str(path))
    monkeypatch.setenv("SAM2KIT_TUNING", "on")
    tuning.reset()
    yield path
    tuning.reset()


@pytest.fixture
def fake_choice(monkeypatch):
    """A registered choice whose candidates take 3, 1 and 2 ticks of a fake clock."""
    clock = [0.0]
    calls = []
    monkeypatch.setattr(tuning.time, "perf_counter", lambda: clock[0])

    def bench():
        def run(name, ticks):
            def fn():
                calls.append(name)
                clock[0] += ticks
            return fn
        return {"a": run("a", 3), "b": run("b", 1), "c": run("c", 2)}
    monkeypatch.setitem(tuning.CHOICES, "fake", tuning.Choice("fake", ("a", "b", "c"), bench, "a test choice"))
    return calls


def test_measured_once_then_cached(fresh, fake_choice):
    assert tuning.choose("fake") == "b"
    d = tuning.decisions()["fake"]
    assert d["source"] == "measured" and d["timings"] == {"a": 3, "b": 1, "c": 2}
    entry = json.loads(fresh.read_text())[tuning.machine_key()]["fake"]
    assert entry["choice"] == "b" and entry["timings"] == {"a": 3, "b": 1, "c": 2}
    n = len(fake_choice)
    assert tuning.choose("fake") == "b" and len(fake_choice) == n  # this process remembers
    tuning.reset()  # as a new process: from the file, nothing timed
    assert tuning.choose("fake") == "b" and len(fake_choice) == n
    assert tuning.decisions()["fake"]["source"] == "cache"
    assert "torch " + torch.__version__ in tuning.machine_key()
    assert f"{torch.get_num_threads()} threads" in tuning.machine_key()


def test_remeasure_off_and_bad_files(fresh, fake_choice, monkeypatch):
    fresh.parent.mkdir(parents=True)
    key = tuning.machine_key()
    fresh.write_text(json.dumps({key: {"fake": {"choice": "c", "timings": {}}}}))
    assert tuning.choose("fake") == "c"  # what the file says
    monkeypatch.setenv("SAM2KIT_TUNING", "remeasure")
    tuning.reset()
    assert tuning.choose("fake") == "b" and tuning.decisions()["fake"]["source"] == "measured"
    assert json.loads(fresh.read_text())[key]["fake"]["choice"] == "b"  # rewritten
    monkeypatch.setenv("SAM2KIT_TUNING", "off")
    tuning.reset()
    n = len(fake_choice)
    assert tuning.choose("fake") == "a" and len(fake_choice) == n  # the default, nothing timed
    monkeypatch.setenv("SAM2KIT_TUNING", "on")
    for bad in ("{not json", json.dumps({key: {"fake": {"choice": "gone"}}}), "[]"):
        fresh.write_text(bad)
        tuning.reset()
        assert tuning.choose("fake") == "b" and tuning.decisions()["fake"]["source"] == "measured"
    assert not [p for p in fresh.parent.iterdir() if p.name.startswith(".tuning-")]  # no temporary files left
    monkeypatch.setenv("SAM2KIT_TUNING", "sometimes")
    tuning.reset()
    with pytest.raises(ValueError, match="SAM2KIT_TUNING must be on, off or remeasure"):
        tuning.choose("fake")


def test_pinned(fresh, fake_choice):
    with tuning.pinned(fake="c"):
        assert tuning.choose("fake") == "c"
    assert tuning.choose("fake") == "b"
    with pytest.raises(ValueError, match="not a candidate"):
        with tuning.pinned(fake="z"):
            pass


def test_processes_share_one_measurement(fresh):
    """Two processes starting together on an empty cache: one measures, the other waits for the
    file lock and reads its result; both use the same kernel."""
    code = ("import json, torch; torch.set_num_threads(1); from sam2kit.kernels import tuning; tuning.choose('linear'); "
            "print(json.dumps(tuning.decisions()['linear']))")
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    out = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    assert sorted(d["source"] for d in out) == ["cache", "measured"]
    assert out[0]["choice"] == out[1]["choice"] in ("aten", "onednn")
    data = json.loads(fresh.read_text())
    (key,) = data
    assert "1 threads" in key and set(data[key]) == {"linear"}


# ---- every candidate computes what the default computes ------------------------------------

@pytest.mark.parametrize("act", [None, "relu", "gelu"])
def test_linear_candidates_agree(act):
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 50, 96, generator=g)
    w, b = torch.randn(384, 96, generator=g) * 0.1, torch.randn(384, generator=g)
    with torch.inference_mode():
        ref = linear_act(x, w, b, act, "aten")
        torch.testing.assert_close(linear_act(x, w, b, act, "onednn"), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(linear_act(x.transpose(0, 1), w, None, act, "onednn"),
                                   linear_act(x.transpose(0, 1), w, None, act, "aten"), atol=1e-5, rtol=1e-5)


def test_memory_attention_candidates_agree():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 300, 256, generator=g), torch.randn(2, 1000, 256, generator=g) * 0.2
    v = torch.randn(2, 1000, 64, generator=g)
    with torch.inference_mode():
        ref = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        default = memory_attention_kernel(q, k, v, tuning.CHOICES["memory_attention"].default)
        for cand in tuning.CHOICES["memory_attention"].candidates:
            out = memory_attention_kernel(q, k, v, cand)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
            if cand.startswith("mm-"):  # the chunk size does not change a bit
                assert torch.equal(out, default)


def test_prompts_per_pass_candidates_agree():
    torch.manual_seed(0)
    dec = MaskDecoder(256)
    image, pe = torch.randn(1, 256, 16, 16), torch.randn(1, 256, 16, 16)
    sparse, dense = torch.randn(5, 3, 256), torch.randn(5, 256, 16, 16)
    high = [torch.randn(1, 32, 64, 64), torch.randn(1, 64, 32, 32)]
    with torch.inference_mode():
        outs = {c: dec(image, pe, sparse, dense, True, True, high, per_pass=int(c))
                for c in tuning.CHOICES["prompts_per_pass"].candidates}
        single = [dec(image, pe, sparse[i:i + 1], dense[i:i + 1], True, True, high) for i in range(5)]
    for out in outs.values():
        torch.testing.assert_close(out.masks, torch.cat([s.masks for s in single]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.iou, torch.cat([s.iou for s in single]), atol=1e-6, rtol=1e-5)


def test_bf16_memory_attention_candidates_agree():
    bench = tuning.CHOICES["bf16_memory_attention"].bench()
    with torch.inference_mode():
        first, after, chunked = (bench[c]().float().squeeze(1) for c in ("values-first", "values-after", "chunked"))
    for other in (after, chunked):
        assert first.shape == other.shape
        # the same function rounded differently in bf16: within a few bf16 steps of its range
        assert float((first - other).abs().max()) <= 0.05 * float(first.abs().max())


def test_bf16_global_attention_candidates_agree():
    from sam2kit.kernels.attention import attention, bf16_chunked_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, n, 32, generator=g) for n in (1100, 1500, 1500))
    ref = F.scaled_dot_product_attention(q, k, v)
    with torch.inference_mode():
        chunked = bf16_chunked_attention(q, k, v).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sdpa = F.scaled_dot_product_attention(q, k, v).float()
            for cand in ("sdpa", "chunked"):
                with tuning.pinned(bf16_global_attention=cand):
                    assert attention(q, k, v).dtype == torch.bfloat16
    assert chunked.shape == ref.shape
    # both are fp32 attention rounded through bf16: errors of the same order
    err_sdpa, err_chunked = float((sdpa - ref).abs().max()), float((chunked - ref).abs().max())
    assert err_chunked <= max(8 * err_sdpa, 0.02), (err_chunked, err_sdpa)


def test_every_choice_has_a_runnable_benchmark(fresh):
    """Each registered choice has a benchmark whose every candidate runs here (no timing
    asserted); the model code asks only for registered choices."""
    for name, choice in tuning.CHOICES.items():
        fns = choice.bench()
        assert set(fns) <= set(choice.candidates) and choice.default in fns, name
    src = os.path.join(ROOT, "src", "sam2kit")
    asked = set()
    for dirpath, _, files in os.walk(src):
        for f in files:
            if f.endswith(".py"):
                text = open(os.path.join(dirpath, f)).read()
                asked.update(part.split('"')[1] for part in text.split('tuning.choose(')[1:] if part.startswith('"'))
    assert asked and asked <= set(tuning.CHOICES), asked - set(tuning.CHOICES)
    assert np.all([c.doc for c in tuning.CHOICES.values()])
