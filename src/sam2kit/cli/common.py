"""What every command shares: the model, output and feedback options, and turning them into the
library's typed objects (``ModelSpec``; the jobs in ``sam2kit.jobs``). Messages, progress bars,
model loading and the staged output folder are the library's (``sam2kit.jobs``), re-exported
here for the commands."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from sam2kit.errors import InputError
from sam2kit.jobs import model as _model
from sam2kit.jobs.common import Console, StagedOutput, check_output_dir, one_line, sample  # noqa: F401
from sam2kit.jobs.model import DEFAULT_MODEL, ModelSpec, hub_offline, model_source  # noqa: F401
from sam2kit.modes import BACKENDS, PRECISIONS

# A problem with the user's input or environment: one line on stderr, exit status 2. The
# library raises the same error (sam2kit.errors.InputError); the old name stays for the commands.
CLIError = InputError


class Parser(argparse.ArgumentParser):
    """Usage errors as one line (the problem, and where to read more), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


# ---- the model ----------------------------------------------------------------------------

def resolution(text: str) -> int:
    """argparse type of ``--resolution``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 256 or value % 32:
        raise argparse.ArgumentTypeError(
            f"expected a multiple of 32 of at least 256 (1024 is the trained size; 512 and 768 "
            f"are faster), got {text!r}")
    return value


def add_model_options(p: argparse.ArgumentParser, resolution_help: str | None = None,
                      onnx: bool = False) -> None:
    """The model options; ``onnx``: also ``--onnx DIR`` and ``--backend onnx`` (a command that can
    run an export of ``sam2kit export`` on ONNX Runtime)."""
    g = p.add_argument_group("model")
    g.add_argument("--model", metavar="MODEL", default=None,
                   help="tiny, small, base-plus or large (SAM 2; add --sam2.1 for SAM 2.1), a "
                        "model name (sam2.1-hiera-large), a hub id (facebook/sam2-hiera-small) or "
                        f"the path of a .pt checkpoint (default: {DEFAULT_MODEL})")
    g.add_argument("--sam2.1", dest="sam21", action="store_true",
                   help="with a short --model name (or none): the SAM 2.1 model of that size")
    g.add_argument("--checkpoint", type=Path, metavar="FILE",
                   help="a local checkpoint file with the weights of --model (no download)")
    g.add_argument("--revision", metavar="REV", help="hub revision (branch, tag or commit) to download")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps (default: auto)")
    g.add_argument("--resolution", type=resolution, metavar="PIXELS",
                   help=resolution_help or "the model's input size (image_size): a multiple of 32, at "
                        "least 256 (default: 1024, as trained; 512 and 768 are faster)")
    s = p.add_argument_group("speed (opt-in; each trades some accuracy or start-up time, see docs/speed.md)")
    s.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: compute in bfloat16 (only on CPUs whose flags have amx_bf16 or avx512_bf16; "
                        "2-3x faster, masks within ~1%% IoU of fp32) (default: fp32)")
    s.add_argument("--compile", action="store_true",
                   help="compile the image encoder with torch.compile (needs a C++ compiler; the first "
                        "image takes a minute or more, later ones are faster)")
    s.add_argument("--int8", action="store_true",
                   help="int8 dynamic quantisation of the linear layers (CPU only)")
    s.add_argument("--backend", choices=BACKENDS + (("onnx",) if onnx else ()), default="torch",
                   help="openvino: run the image encoder on OpenVINO (pip install 'sam2kit[openvino]'; "
                        "CPU; with --precision bf16 the fastest encoder on CPUs with native bf16; the "
                        "first run of a model exports it, cached)"
                        + ("; onnx: run the whole model from an ONNX export on ONNX Runtime (--onnx DIR)"
                           if onnx else "") + " (default: torch)")
    if onnx:
        g.add_argument("--onnx", type=Path, metavar="DIR",
                       help="a folder written by `sam2kit export`: run that model on ONNX Runtime "
                            "(implies --backend onnx; --device cpu or cuda picks the execution provider; "
                            "pip install 'sam2kit[onnx]'; see docs/export.md)")


# ---- the output folder --------------------------------------------------------------------

def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="output folder: created if missing; must be empty unless --overwrite")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty output folder, replacing the outputs of an earlier "
                        "run there (other files are left alone)")


def add_format_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", dest="formats", type=_formats, default=(), metavar="NAMES",
                   help="also write these export formats beside results.json, comma-separated: "
                        "coco-polygons, coco-rle, yolo, cvat-xml, labelstudio (docs/formats.md)")
    p.add_argument("--polygon-tolerance", type=float, default=1.0, metavar="PX",
                   help="largest distance in pixels between an exported polygon and the mask's "
                        "traced outline (Douglas-Peucker; 0: no simplification; default 1)")


def _formats(text: str) -> tuple[str, ...]:
    """argparse type of ``--format``."""
    from sam2kit.formats.write import parse_formats

    try:
        return tuple(parse_formats(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_feedback_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars, notes or summary (errors are still printed)")
    p.add_argument("--json", action="store_true",
                   help="print the results document (results.json) on stdout instead of a summary")




# ---- options -> the library's objects ---------------------------------------------------------

def fields_of(cls, args, **given):
    """An instance of the dataclass ``cls`` from the parsed options of the same names (lists
    become tuples); ``given`` overrides."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in given:
            values[f.name] = given[f.name]
        elif hasattr(args, f.name):
            v = getattr(args, f.name)
            values[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def model_line(results: dict) -> str:
    """The summary's model line: name, input size, device, and the runtime when not PyTorch."""
    backend = results.get("backend", "torch")
    runtime = {"torch": "", "onnx": " (ONNX Runtime)", "openvino": " (image encoder on OpenVINO)"}.get(
        backend, f" ({backend})")
    return f"model    {results['model_config']} at {results['resolution']} px on {results['device']}{runtime}"


def model_spec(args) -> ModelSpec:
    """The ModelSpec the model options give."""
    return fields_of(ModelSpec, args)


def check_model_options(args) -> str:
    """Validate --model, --checkpoint and --device before any slow work; returns the source."""
    return _model.check_model_options(model_spec(args))


def load_model(args, console: Console, image_size: int | None):
    """The SAM 2 model named by the options, and a dict describing it for results.json."""
    return _model.load_model(model_spec(args), console, image_size)
