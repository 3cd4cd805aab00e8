"""Kernel choices for the tuned parity passes (SAM2KIT_TUNING=on).

The test session runs with SAM2KIT_TUNING=off: every measured choice of ``sam2kit.kernels.tuning`` at
its default candidate, so the exact parity tests compare the default kernels. A user's process
runs with tuning on and uses whichever candidate this machine measured fastest. The tuned
passes run the same parity cases with tuning on and a tuning file of the test's own that holds,
for this machine, one of the ``N_SETS`` candidate sets: set k takes every choice's k-th non-default
candidate (cycling through the shorter lists), so together the sets put every non-default
candidate that this build can run through the comparison, whichever one this machine would
pick. Nothing is measured in these passes, so they do not depend on timings.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import sam2kit.modeling.mask_decoder  # noqa: F401 - registers the choice prompts_per_pass
from sam2kit.kernels import tuning

# how many sets: the longest list of non-default candidates (memory_attention's three)
N_SETS = max(len(c.candidates) - 1 for c in tuning.CHOICES.values())


def candidate_set(k: int) -> dict[str, str]:
    """{choice name: candidate} for set ``k`` (0 <= k < N_SETS): every choice that has another
    candidate runnable here takes its k-th non-default one (cycling); every such candidate is
    in at least one of the N_SETS sets."""
    out = {}
    for name, choice in tuning.CHOICES.items():
        here = set(choice.bench())  # the candidates this build and CPU can run
        others = [c for c in choice.candidates[1:] if c in here]
        if others:
            out[name] = others[k % len(others)]
    return out


@contextlib.contextmanager
def tuned(choices: dict[str, str], folder: Path, monkeypatch):
    """Within the block: SAM2KIT_TUNING=on, SAM2KIT_TUNING_FILE a file in ``folder`` holding
    ``choices`` for this machine (as if measured), this process's choices forgotten, so the
    model reads the file as any process with tuning on does."""
    path = Path(folder) / "tuning.json"
    entries = {name: {"choice": cand, "timings": {}} for name, cand in choices.items()}
    path.write_text(json.dumps({tuning.machine_key(): entries}))
    monkeypatch.setenv("SAM2KIT_TUNING", "on")
    monkeypatch.setenv("SAM2KIT_TUNING_FILE", str(path))
    tuning.reset()
    try:
        yield
    finally:
        tuning.reset()


def assert_used(choices: dict[str, str], names: tuple[str, ...]) -> None:
    """The model asked for each choice in ``names`` and got the candidate of ``choices`` from
    the tuning file (so the pass compared that kernel, not the default)."""
    made = tuning.decisions()
    for name in names:
        assert name in made, f"the model never asked for the tuning choice {name!r}: this pass does not guard it"
        assert made[name]["source"] == "cache" and made[name]["choice"] == choices[name], (name, made[name])
