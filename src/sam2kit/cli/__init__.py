"""The ``sam2kit`` command line (``sam2kit --help``): a thin layer over the public API, one
module per command (image, video, batch, models, demo, serve, vos, evaluate)."""

from __future__ import annotations

import argparse
import sys

from sam2kit import __version__, tune_cpu_allocator
from sam2kit.errors import InputError

from sam2kit.cli import batch, demo, evaluate, image, models, serve, video, vos
from sam2kit.cli.common import CLIError, Console, Parser, one_line
from sam2kit.outputs import to_json

__all__ = ["main", "build_parser", "CLIError"]

DESCRIPTION = """\
Segment Anything Model 2 (SAM 2 and SAM 2.1) on photos and videos.

  sam2kit image [IMAGE] -o DIR     masks of a photo from clicks, boxes or a grid of clicks
  sam2kit video [VIDEO] -o DIR     objects tracked through a video from clicks or boxes
  sam2kit batch INPUT... -o OUT    many images or videos: resumable, local processes or Ray
  sam2kit models [download NAME]   the known models and where each is cached; fetch one
  sam2kit demo -o DIR              both workflows on the bundled photo and clip
  sam2kit serve                    the HTTP API and the page (pip install 'sam2kit[serve]')
  sam2kit vos DATASET -o PRED      semi-supervised VOS over a benchmark (DAVIS, SA-V, YouTube-VOS)
  sam2kit evaluate --gt GT --pred PRED   J&F of the predictions, as the official evaluators

`sam2kit COMMAND --help` tells more. Messages and progress bars go to stderr, results to
stdout (--json: the results document). Exit status: 0 success; 2 bad input (one line on
stderr naming the problem and the fix; no output written); 1 an unexpected failure; 3 (batch)
some items failed, (video) a live stream broke or stalled (the frames done are written); 130
interrupted by Ctrl-C (video on a live source: twice; the frames done are written).
"""


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="sam2kit", description=DESCRIPTION,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"sam2kit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in (image, video, batch, models, demo, serve, vos, evaluate):
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status
    (a command may set ``args.exit_status``: batch says 3 when some items failed)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    console = Console(quiet=args.quiet)
    tune_cpu_allocator()  # this process is ours: large buffers are reused (docs/speed.md)
    try:
        results, text = args.run(args, console)
    except InputError as e:  # CLIError among them: the library's and the commands' own
        return _fail(str(e), 2)
    except KeyboardInterrupt as e:  # a command may say what an interruption leaves (batch)
        return _fail(str(e) or "interrupted; nothing was written", 130)
    except OSError as e:  # a full disk, a folder that went away, ...
        return _fail(f"{one_line(e)}; nothing was written", 1)
    except Exception as e:  # noqa: BLE001 - one line for the user, not a traceback
        return _fail(f"unexpected {e.__class__.__name__}: {one_line(e)} (a bug: please report it "
                     "with the command you ran; nothing was written)", 1)
    if args.json:
        print(to_json(results))
    elif not args.quiet:
        print(text)
    return getattr(args, "exit_status", 0)


def _fail(message: str, code: int) -> int:
    print(f"sam2kit: error: {message}", file=sys.stderr)
    return code
