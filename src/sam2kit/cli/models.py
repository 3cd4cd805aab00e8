"""``sam2kit models``: the known models, their size, whether and where each is cached; and
``sam2kit models download NAME`` to fetch one ahead of time."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import torch

from sam2kit import CONFIGS, CheckpointNotFoundError, get_config
from sam2kit.hub import cached_checkpoint, download_checkpoint
from sam2kit.modeling.sam2 import SAM2Model

from sam2kit.cli.common import CLIError, Console, add_feedback_options, hub_offline, model_source, one_line


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "models", help="list the models and where each is cached; download one",
        description="List the eight official SAM 2 / SAM 2.1 models with their parameter count, "
                    "download size and whether (and where) each is in the Hugging Face cache. "
                    "`sam2kit models download NAME` fetches one ahead of time.")
    add_feedback_options(p)
    p.set_defaults(run=list_command)
    sub2 = p.add_subparsers(dest="models_command", metavar="{download}")
    d = sub2.add_parser("download", help="fetch a model's checkpoint into the hub cache",
                        description="Fetch a model's official checkpoint into the Hugging Face cache "
                                    "(with huggingface_hub: its cache, HF_ENDPOINT, HF_TOKEN); prints "
                                    "the file's path on stdout.")
    d.add_argument("name", metavar="NAME",
                   help="tiny, small, base-plus or large (with --sam2.1 for SAM 2.1), a model name "
                        "(sam2.1-hiera-large) or a hub id (facebook/sam2-hiera-tiny)")
    d.add_argument("--sam2.1", dest="sam21", action="store_true", help="the SAM 2.1 model of that size")
    d.add_argument("--revision", metavar="REV", help="hub revision (branch, tag or commit)")
    add_feedback_options(d)
    d.set_defaults(run=download_command)
    return p


@functools.lru_cache(maxsize=None)
def model_size(config) -> tuple[int, int]:
    """(parameters, bytes of the float32 state dict), counted on the meta device (no memory)."""
    with torch.device("meta"):
        model = SAM2Model(config)
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return params, nbytes


def model_rows() -> list[dict]:
    rows = []
    for name, config in CONFIGS.items():
        params, nbytes = model_size(config)
        cached = cached_checkpoint(config)
        size = name.split("-hiera-")[1]
        rows.append({"name": name, "short_name": size + (" --sam2.1" if config.is_sam21 else ""),
                     "hub_id": config.hub_id, "checkpoint_file": config.checkpoint_file,
                     "parameters": params, "download_bytes_approx": nbytes,
                     "cached": cached is not None,
                     "cached_path": str(cached) if cached else None,
                     "cached_bytes": cached.stat().st_size if cached else None})
    return rows


def list_command(args, console: Console) -> tuple[dict, str]:
    rows = model_rows()
    lines = [f"{'model':<24}{'--model':<20}{'params':>9}{'download':>11}  cached"]
    for r in rows:
        where = r["cached_path"] or "no"
        lines.append(f"{r['name']:<24}{r['short_name']:<20}{r['parameters'] / 1e6:>8.1f}M"
                     f"{r['download_bytes_approx'] / 1e6:>8.0f} MB  {where}")
    lines.append("download one with `sam2kit models download NAME` (sizes: the float32 weights, "
                 "about the size of the file)")
    return {"models": rows}, "\n".join(lines)


def download_command(args, console: Console) -> tuple[dict, str]:
    source = model_source(args.name, args.sam21)
    if Path(source).is_file():
        raise CLIError(f"{args.name!r} is a local file; `models download` takes a model name "
                       "(tiny, small, base-plus, large, or a hub id)")
    config = get_config(source)
    cached = cached_checkpoint(config) if args.revision is None else None
    if cached is None:
        if not hub_offline():
            console.note(f"downloading {config.hub_id}/{config.checkpoint_file} (about "
                         f"{model_size(config)[1] / 1e6:.0f} MB) into the Hugging Face cache ...")
        try:
            with console.hub_progress():
                cached = download_checkpoint(config, args.revision)
        except CheckpointNotFoundError as e:
            raise CLIError(one_line(e)) from None
        what = "downloaded"
    else:
        what = "already cached"
    result = {"name": config.name, "hub_id": config.hub_id, "revision": args.revision,
              "path": str(cached), "bytes": cached.stat().st_size, "status": what.replace(" ", "_")}
    console.note(f"{config.name}: {what}, {result['bytes'] / 1e6:.0f} MB")
    return result, str(cached)
