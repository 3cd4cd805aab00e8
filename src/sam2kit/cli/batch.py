"""``sam2kit batch``: many images or videos with one command, resumable, on local worker
processes or Ray (the engine is ``sam2kit.batch``; this module parses and presents)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sam2kit.cli.auto import check_auto_args
from sam2kit.cli.common import CLIError, Console, add_feedback_options, check_model_options, one_line

DESCRIPTION = """\
Run `sam2kit image`, `image --auto` or `video` over many items, resumably:
  sam2kit batch photos/ 'more/*.png' -o OUT --task image --grid 3x3
  sam2kit batch --manifest items.jsonl -o OUT --task video --workers 2
  sam2kit batch s3://bucket/photos/ -o s3://bucket/out --task auto --ray local
  sam2kit batch --status OUT
Each item's outputs go to OUT/<its path relative to its input root>/, the files the
single-item command writes; --task image and auto also write OUT/annotations.json (COCO).
The ledger OUT/batch.sqlite records every item: a rerun skips finished items, redoes the
rest, and refuses items made with other settings unless --overwrite. Exit status: 0 all
done, 3 some items failed (the summary and --status list them), 2 bad input.
"""

# (group, flag, kind, metavar, help): the single-item commands' options, passed on as given
FORWARD = [
    ("prompts", "--point", "append", "POINT", "a click, written as in `sam2kit image` (X,Y[:LABEL]; "
     "all clicks one prompt) or `sam2kit video` (FRAME:X,Y[:LABEL][@OBJ]); repeatable"),
    ("prompts", "--box", "append", "BOX", "a box, as in `sam2kit image` (X0,Y0,X1,Y1) or `video` "
     "(FRAME:X0,Y0,X1,Y1[@OBJ]); repeatable"),
    ("prompts", "--grid", "value", "ROWSxCOLS", "image: a grid of points, each its own prompt "
     "(default without prompts: 3x3)"),
    ("prompts", "--single-mask", "flag", None, "image: one mask per prompt instead of the best of three"),
    ("auto", "--points-per-side", "value", "N", "clicks per side of the grid (default 32)"),
    ("auto", "--points-per-batch", "value", "N", "clicks decoded at once (default 64)"),
    ("auto", "--pred-iou-thresh", "value", "T", "keep masks with predicted IoU above T (default 0.8)"),
    ("auto", "--stability-thresh", "value", "T", "keep masks with stability of at least T (default 0.95)"),
    ("auto", "--box-nms-thresh", "value", "T", "box NMS IoU threshold (default 0.7)"),
    ("auto", "--crop-layers", "value", "N", "crop layers (default 0)"),
    ("auto", "--min-region-area", "value", "A", "remove holes and islands up to A low-res pixels (default 0)"),
    ("auto", "--m2m", "flag", None, "refine each mask once with its click"),
    ("video", "--start-frame", "value", "N", "track from frame N (default: the first prompted frame)"),
    ("video", "--max-frames", "value", "N", "track at most N frames"),
    ("video", "--reverse", "flag", None, "track backward"),
    ("video", "--fps", "value", "FPS", "frame rate of overlay.mp4 (default: the video's)"),
    ("export", "--format", "value", "NAMES", "export formats written in every item's folder, "
     "comma-separated: coco-polygons, coco-rle, yolo, cvat-xml (as `sam2kit image --format`)"),
    ("export", "--polygon-tolerance", "value", "PX", "their polygons' tolerance in pixels (default 1)"),
    ("model", "--model", "value", "MODEL", "tiny, small, base-plus, large, a model name, a hub id or a "
     ".pt checkpoint (default: facebook/sam2-hiera-tiny)"),
    ("model", "--sam2.1", "flag", None, "with a short --model name: the SAM 2.1 model"),
    ("model", "--checkpoint", "value", "FILE", "the weights of --model from a local file"),
    ("model", "--revision", "value", "REV", "hub revision to download"),
    ("model", "--device", "value", "DEVICE", "auto, cpu, cuda, cuda:N or mps (default: auto)"),
    ("model", "--resolution", "value", "PIXELS", "the model's input size (default 1024)"),
    ("model", "--precision", "value", "fp32|bf16", "compute precision (default fp32)"),
    ("model", "--compile", "flag", None, "torch.compile the image encoder"),
    ("model", "--int8", "flag", None, "int8 dynamic quantisation (CPU)"),
    ("model", "--backend", "value", "torch|openvino", "the image encoder's runtime (default torch)"),
]
GROUPS = {"prompts": "default prompt (items without their own; as in `sam2kit image` / `video`)",
          "auto": "automatic masks (--task auto; as `sam2kit image --auto`)",
          "video": "tracking (--task video; as `sam2kit video`)",
          "export": "export formats (docs/formats.md)", "model": "model (as every command)"}


def _dest(flag: str) -> str:
    return "fw_" + flag.lstrip("-").replace("-", "_").replace(".", "")


def _count(minimum: int):
    def parse(text: str) -> int:
        if not text.strip().isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return int(text)
    return parse


def _seconds(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("batch", help="many images or videos: resumable, local processes or Ray",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="files, folders (searched recursively) or globs (quoted), local or s3://...")
    p.add_argument("-o", "--output", metavar="OUT", help="output folder or object-store URL")
    p.add_argument("--task", choices=("image", "auto", "video"), default="image",
                   help="image: prompts (sam2kit image); auto: every mask (image --auto); video: "
                        "tracking (sam2kit video) (default: image)")
    p.add_argument("--manifest", metavar="FILE", help="a JSONL file: one {\"path\": ..., prompts} a line "
                   "(docs/batch.md)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo items made with other settings; write into a folder without a ledger")
    p.add_argument("--status", metavar="OUT", help="print the progress of the batch in OUT and exit")
    r = p.add_argument_group("running")
    r.add_argument("--workers", type=_count(1), default=1, metavar="N",
                   help="worker processes (or Ray actors), each with its own model (default 1)")
    r.add_argument("--threads-per-worker", type=_count(1), metavar="T",
                   help="torch threads (Ray: CPUs) of each worker (default: the cores / --workers)")
    r.add_argument("--ray", metavar="ADDRESS",
                   help="run on Ray: `local` starts a runtime on this machine; or a cluster address "
                        "(auto, HOST:PORT, ray://HOST:10001) (pip install 'sam2kit[ray]')")
    r.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="GPUs of each Ray actor (default 0)")
    r.add_argument("--items-per-task", type=_count(1), default=1, metavar="K",
                   help="Ray: items in one task (default 1; more when the driver, at about half a "
                        "millisecond of CPU a task, cannot keep up with a large cluster)")
    r.add_argument("--retries", type=_count(0), default=1, metavar="N",
                   help="further attempts of a failing item (default 1)")
    r.add_argument("--item-timeout", type=_seconds, metavar="S",
                   help="seconds an item may take: past it its worker process (or Ray actor) is "
                        "killed and replaced and the item fails as timed out, then is retried per "
                        "--retries (default: no limit; set, items never run in the driver's process)")
    r.add_argument("--verify", action="store_true",
                   help="object-store OUT: check every done item's results.json before skipping it "
                        "(always done for local folders)")
    r.add_argument("--state-dir", metavar="DIR",
                   help="object-store OUT: local folder of the ledger (default ~/.cache/sam2kit/batch/...)")
    groups = {name: p.add_argument_group(title) for name, title in GROUPS.items()}
    for group, flag, kind, metavar, text in FORWARD:
        g = groups[group]
        if kind == "flag":
            g.add_argument(flag, dest=_dest(flag), action="store_true", help=text)
        else:
            g.add_argument(flag, dest=_dest(flag), action="append" if kind == "append" else "store",
                           metavar=metavar, help=text)
    add_feedback_options(p)
    p.set_defaults(run=command)
    return p


def forwarded_options(args) -> tuple[str, ...]:
    """The single-item options as ``--flag=value`` tokens (paths made absolute: workers run
    elsewhere)."""
    tokens = []
    for _, flag, kind, _, _ in FORWARD:
        value = getattr(args, _dest(flag))
        if kind == "flag":
            tokens += [flag] if value else []
            continue
        for v in (value or []) if kind == "append" else ([] if value is None else [value]):
            if flag == "--checkpoint" or (flag == "--model" and Path(v).expanduser().is_file()):
                v = os.path.abspath(os.path.expanduser(v))
            tokens.append(f"{flag}={v}")
    return tuple(tokens)


def typed(task: str, options) -> tuple:
    """(ModelSpec, job) of the forwarded options, read by the single-item command's own parser,
    so that defaults and checks are the command's; a CLIError with the parser's message (one
    line) for bad options."""
    import contextlib
    import io
    import re

    from sam2kit.cli import image, video
    from sam2kit.cli.common import Parser, fields_of, model_spec
    from sam2kit.jobs.auto import AutoJob
    from sam2kit.jobs.image import ImageJob
    from sam2kit.jobs.video import VideoJob

    parser = Parser(prog="sam2kit")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)
    image.add_parser(sub)
    video.add_parser(sub)
    argv = ["video" if task == "video" else "image", "ITEM", "-o", "OUT"] + (["--auto"] if task == "auto" else [])
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args(argv + list(options))
    except SystemExit:
        message = " ".join(err.getvalue().split()) or f"bad options: {' '.join(options)}"
        raise CLIError(re.sub(r"^sam2kit \w+: error: ", "", message)) from None
    check_model_options(ns)
    if task == "auto":
        check_auto_args(ns)
    job_type = {"image": ImageJob, "auto": AutoJob, "video": VideoJob}[task]
    return model_spec(ns), fields_of(job_type, ns, **{"video" if task == "video" else "image": None})


def command(args, console: Console) -> tuple[dict, str]:
    from sam2kit.batch import BatchConfig, BatchError, InputError, discover, read_manifest, run_batch
    from sam2kit.batch.pool import InitError
    from sam2kit.batch.storage import StorageError

    if args.status:
        return status(args.status, args.state_dir)
    if not args.output:
        raise CLIError("give the output with -o OUT (a folder or an s3:// URL), or --status OUT")
    if not args.inputs and not args.manifest:
        raise CLIError("give the items: files, folders or globs, or --manifest items.jsonl")
    model, job = typed(args.task, forwarded_options(args))
    try:
        exclude = None if "://" in args.output else os.path.abspath(args.output)
        items = discover(args.inputs, args.task, exclude) if args.inputs else []
        if args.manifest:
            from sam2kit.batch.items import check_unique

            items = check_unique(items + read_manifest(args.manifest, args.task))
        config = BatchConfig(args.task, args.output, model, job, args.workers, args.threads_per_worker,
                             args.ray, args.gpus_per_worker, args.items_per_task, args.retries,
                             args.overwrite, args.verify, args.state_dir, args.item_timeout)
        report = run_batch(config, items, console)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted; finished items are kept in {args.output}: rerun the "
                                "same command to make the rest") from None
    except (InputError, BatchError, InitError, StorageError) as e:  # StorageError: a bad URL, a
        raise CLIError(one_line(e)) from None                       # missing extra, a busy OUT
    if report["failed"]:
        args.exit_status = 3
    return report, summary(report)


def summary(r: dict) -> str:
    lines = [f"batch    {r['items']} {r['task']} items: {r['done']} made, {r['skipped']} done before, "
             f"{r['failed']} failed" + (f" ({r['retried']} retries)" if r["retried"] else ""),
             f"speed    {r['seconds']:.1f} s, {r['items_per_second']:.3f} items/s on {r['backend']}"
             if r["done"] or r["failed"] else f"time     {r['seconds']:.1f} s (nothing left to make)"]
    for f in r["failures"][:10]:
        lines.append(f"failed   {f['key']}: {f['error']} ({f['attempts']} attempts)")
    extra = ", annotations.json" if r["task"] != "video" else ""
    lines.append(f"wrote    {r['output']}/<item>/{extra}; ledger {r['ledger']} "
                 f"(sam2kit batch --status {r['output']})")
    return "\n".join(lines)


def status(url: str, state_dir: str | None) -> tuple[dict, str]:
    from sam2kit.batch import batch_status

    from sam2kit.batch.storage import StorageError

    try:
        s = batch_status(url, state_dir)
    except (FileNotFoundError, StorageError) as e:
        raise CLIError(one_line(e)) from None
    todo = s["pending"] + s["running"]
    lines = [f"batch    {s['output']}: task {s['task']}, "
             f"{'running now' if s['running_now'] else 'not running'}",
             f"items    {s['items']}: {s['done']} done, {s['failed']} failed, {todo} to do"
             + (f" ({s['running']} {'in flight' if s['running_now'] else 'interrupted'})" if s["running"] else ""),
             f"attempts {s['attempts']}; workers busy {s['worker_seconds']:.1f} s"
             + (f"; {s['items_per_second']:.3f} items/s" if s["items_per_second"] else "")]
    for f in s["failures"][:10]:
        lines.append(f"failed   {f['key']}: {f['error']} ({f['attempts']} attempts)")
    return s, "\n".join(lines)
