"""``sam2kit video``: track objects through a video from clicks or boxes on any frame (the origin
video workflow: a small grid of clicks at the centre of the first frame, tracked to the end)."""

from __future__ import annotations

import argparse

from sam2kit.jobs import video as job
from sam2kit.jobs.model import uses_onnx
from sam2kit.jobs.video import DEFAULT_FPS, VideoJob

from sam2kit.cli import live
from sam2kit.cli import prompts as P
from sam2kit.cli.video_summary import summary
from sam2kit.cli.common import (CLIError, Console, StagedOutput, add_feedback_options, add_format_options,
                                add_model_options, add_output_options, check_model_options, fields_of,
                                model_spec)

DESCRIPTION = """\
Track objects through a video with SAM 2 and write, into the output folder, for every frame
tracked (files numbered by frame index):
  frames/00000.jpg          the video frame
  masks/<obj>/00000.png     each object's mask (8-bit, 0 background / 255 object)
  masks/palette/00000.png   all objects in one indexed PNG (DAVIS layout: 0 background, k the
                            k-th object in order of object number, DAVIS colours)
  overlays/00000.jpg        the frame with every object's mask (and the prompts) drawn on it
  overlay.mp4               the overlays as an H.264 video at the input's frame rate
  results.json              per frame and object: mask area, bounding box, object score;
                            totals, timings and frames per second
Files are written as frames are done, into DIR.partial-PID-XXXX beside DIR, which becomes DIR
when the run completes (a failed run leaves nothing; the partial folder of a run that was killed
is removed by the next run for DIR). Without --point or --box, object 1 is
prompted with a 3x3 grid of foreground points spanning the central tenth of the start frame.

Live sources (a camera, a network stream, - for standard input, a folder with --follow) are
tracked as frames arrive, in flat memory, until the stream ends, Ctrl-C or SIGTERM (a clean
stop: exit 0), --max-frames or --duration; a second Ctrl-C stops at once (exit 130). overlay.mp4
is then a fragmented mp4, playable however the run stopped; the per-frame results go to
frames.jsonl (a line per frame, as it is done) and results.json is a summary of bounded size,
refreshed every 2 s. A stream that breaks or stalls ends the run with the frames done kept and
exit status 3.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("video", help="track objects through a video from clicks or boxes",
                       description=DESCRIPTION, epilog=f"Prompts: {P.COORDINATES_HELP}.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", nargs="?", metavar="VIDEO",
                   help="a video file in any container FFmpeg reads (mp4, mov, mkv, webm, ts, ...), a "
                        "folder of numbered JPEG/PNG frames, or a live source: - (standard input), a "
                        "network URL (rtsp:// rtmp:// http(s):// udp:// tcp:// srt://), a camera "
                        "(/dev/video0; or --camera N) (default: the bundled sample clip)")
    add_output_options(p)
    add_format_options(p)
    g = p.add_argument_group("prompts (repeatable; the same FRAME and OBJ form one prompt)")
    g.add_argument("--point", type=P.video_point, action="append", default=[],
                   metavar="FRAME:X,Y[:LABEL][@OBJ]",
                   help="a click on frame FRAME (from 0) for object OBJ (default 1); LABEL 1 "
                        "foreground (default) or 0 background")
    g.add_argument("--box", type=P.video_box, action="append", default=[],
                   metavar="FRAME:X0,Y0,X1,Y1[@OBJ]", help="a box on frame FRAME for object OBJ")
    add_tracking_options(p)
    live.add_live_options(p)
    add_model_options(p, onnx=True)
    add_feedback_options(p)
    p.set_defaults(run=command)
    return p


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _frame_index(text: str) -> int:
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a frame index (0, 1, ...), got {text!r}")
    return int(text)


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"expected frames per second (e.g. 25 or 29.97), got {text!r}")
    return value


def add_tracking_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tracking")
    g.add_argument("--start-frame", type=_frame_index, metavar="N",
                   help="track from frame N (default: the first prompted frame; the last one with "
                        "--reverse)")
    g.add_argument("--max-frames", type=_positive, metavar="N",
                   help="track at most N frames, the start frame included (default: to the end)")
    g.add_argument("--reverse", action="store_true", help="track backward, toward frame 0")
    g.add_argument("--fps", type=_fps, metavar="FPS",
                   help=f"frame rate of overlay.mp4 (default: the video's own; {DEFAULT_FPS:g} for "
                        "a folder of frames)")


def command(args, console: Console) -> tuple[dict, str]:
    check_model_options(args)  # fail fast, before anything slow
    if live.is_live(args):
        if uses_onnx(model_spec(args)):
            raise CLIError("--onnx tracks video files and frame folders; a live source (camera, stream, "
                           "--follow) runs on the PyTorch model's stream session: leave --onnx out")
        if args.formats:  # live results are a frames.jsonl stream: nothing to convert at the end
            raise CLIError("--format is for files and frame folders; a live source's results are "
                           "frames.jsonl, written as frames arrive (convert a saved run instead)")
        return live.command(args, console)
    with StagedOutput(args.output, args.overwrite) as out:
        results = job.run(fields_of(VideoJob, args), console, out, model_spec=model_spec(args))
    return results, summary(results, args.output)
