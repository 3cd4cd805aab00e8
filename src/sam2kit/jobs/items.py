"""A job as one item of many (``sam2kit batch``): the job types by task, an item's own prompts
(which replace the job's default prompt), and making one item."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from sam2kit.jobs import auto, image, video
from sam2kit.jobs import prompts as P
from sam2kit.jobs.auto import AutoJob
from sam2kit.jobs.common import Console
from sam2kit.jobs.image import ImageJob
from sam2kit.jobs.video import VideoJob

Job = ImageJob | AutoJob | VideoJob
JOB_TYPES: dict[str, type] = {"image": ImageJob, "auto": AutoJob, "video": VideoJob}
INPUT_FIELD = {"image": "image", "auto": "image", "video": "video"}
PROMPT_FIELDS = ("point", "box", "grid")  # an item's own prompts replace these
NOT_SETTINGS = {"image", "video", *PROMPT_FIELDS}  # fields that say what, not how


@dataclass(frozen=True)
class ItemPrompts:
    """An item's own prompts, typed as the job's: image clicks (all one prompt, with at most one
    box), boxes, or a grid; video clicks and boxes on frames for objects."""

    point: tuple[P.PointSpec, ...] = ()
    box: tuple[P.BoxSpec, ...] = ()
    grid: tuple[int, int] | None = None

    def __bool__(self) -> bool:
        return bool(self.point or self.box or self.grid)

    def texts(self) -> list[str]:
        """The prompts as written (``--point=X,Y:1`` ...), for records and messages."""
        return job_prompt_texts(self)


def task_of(job: Job) -> str:
    return {ImageJob: "image", AutoJob: "auto", VideoJob: "video"}[type(job)]


def job_prompt_texts(job) -> list[str]:
    """The prompts of a job (or ItemPrompts) as written: ``--point=...``, ``--box=...``, ``--grid=RxC``."""
    out = [f"--point={p.text}" for p in getattr(job, "point", ())]
    out += [f"--box={b.text}" for b in getattr(job, "box", ())]
    if getattr(job, "grid", None):
        out.append(f"--grid={job.grid[0]}x{job.grid[1]}")
    return out


def for_item(job: Job, source: str, prompts: ItemPrompts | None = None) -> Job:
    """``job`` on the input ``source``, with the item's own ``prompts`` (if any) in place of its
    default prompt."""
    task = task_of(job)
    changes = {INPUT_FIELD[task]: source if task == "video" else Path(source)}
    if prompts:
        if task == "auto":
            raise ValueError("automatic masks take no prompts")
        changes.update(point=prompts.point, box=prompts.box)
        if task == "image":
            changes["grid"] = prompts.grid
    return dataclasses.replace(job, **changes)


def job_settings(job: Job) -> dict:
    """The job's fields that change outputs (not its input nor its prompts), JSON-able."""
    out = {}
    for f in dataclasses.fields(job):
        if f.name in NOT_SETTINGS:
            continue
        v = getattr(job, f.name)
        out[f.name] = v if isinstance(v, (int, float, bool, str, type(None))) else str(v)
    return out


def run_job(job: Job, console: Console, out: Path, model, model_info: dict) -> dict:
    """Make ``job`` into the folder ``out`` (being written) with a loaded model; its results."""
    if isinstance(job, VideoJob):
        return video.run(job, console, out, model, model_info)
    if isinstance(job, AutoJob):
        return auto.run_auto(job, console, out, model, model_info)
    return image.run(job, console, out, model, model_info)
