"""``sam2kit export``: the model as ONNX files and a manifest (``sam2kit.onnx.export_pretrained``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sam2kit.cli.common import CLIError, Console, add_feedback_options, check_output_dir, model_source, resolution


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="write the model as ONNX files (runs without PyTorch: sam2kit.onnx)",
        description="Export every module tracking needs (image_encoder, prompt_decoder, "
                    "memory_attention, memory_encoder) as fp32 ONNX (opset 17) with a manifest.json "
                    "(shapes, dynamic axes, checksums). Needs pip install 'sam2kit[export]'; the "
                    "folder runs with sam2kit.onnx (ONNX Runtime and NumPy, no PyTorch). See docs/export.md.")
    p.add_argument("--model", metavar="MODEL", default=None,
                   help="tiny, small, base-plus or large (add --sam2.1), a model name, a hub id or a .pt "
                        "checkpoint (default: facebook/sam2-hiera-tiny)")
    p.add_argument("--sam2.1", dest="sam21", action="store_true", help="the SAM 2.1 model of that size")
    p.add_argument("--checkpoint", type=Path, metavar="FILE", help="a local checkpoint with --model's weights")
    p.add_argument("--revision", metavar="REV", help="hub revision to download")
    p.add_argument("--resolution", type=resolution, metavar="PIXELS",
                   help="the model's input size: a multiple of 32, at least 256 (default: 1024)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="the export folder: must not exist or be empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty folder")
    add_feedback_options(p)
    p.set_defaults(run=run)
    return p


def run(args, console: Console):
    check_output_dir(args.output, args.overwrite)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise CLIError(f"checkpoint file {str(args.checkpoint)!r} does not exist; check the path")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise CLIError("sam2kit export needs the onnx package: pip install 'sam2kit[export]'") from None
    from sam2kit.onnx.export import export_pretrained

    console.note(f"exporting to {args.output} ...")
    manifest = export_pretrained(model_source(args.model, args.sam21), args.output, args.checkpoint,
                                 args.resolution, args.revision, overwrite=args.overwrite)
    files = ", ".join(f"{v['file']} {v['bytes'] / 2**20:.1f} MB" for v in manifest["files"].values())
    worst = max(e for per in manifest["max_abs_error_vs_eager"].values() for e in per.values()) \
        if manifest["max_abs_error_vs_eager"] else float("nan")
    text = (f"exported {manifest['model']['name']} at {manifest['resolution']} px to {args.output}: {files}; "
            f"max abs error against PyTorch {worst:.1e}")
    return {"output": str(args.output), **manifest}, text
