"""``sam2kit demo``: both origin workflows on the bundled samples, in a few minutes on a CPU."""

from __future__ import annotations

import argparse

from sam2kit.cli import image, video
from sam2kit.jobs import image as image_job
from sam2kit.jobs import video as video_job
from sam2kit.jobs.image import ImageJob
from sam2kit.jobs.video import VideoJob
from sam2kit.cli.common import (Console, StagedOutput, add_feedback_options, add_model_options,
                     add_output_options, check_model_options, load_model)

DEMO_MAX_FRAMES = 25
DEMO_VIDEO_RESOLUTION = 512

DESCRIPTION = f"""\
Run both origin workflows on the bundled samples (sources and licences in
sam2kit/assets/README.md) and write:
  DIR/image/   `sam2kit image` on the sample photo: a 3x3 grid of clicks, each point's best
               mask, an overlay per point, a composite of all nine, results.json
  DIR/video/   `sam2kit video` on the sample clip (640x360, 25 fps): a 3x3 grid of clicks at
               the centre of frame 0 for one object, tracked through the first
               {DEMO_MAX_FRAMES} frames: frames, masks, palette masks, overlays, overlay.mp4,
               results.json
To stay within a few minutes on a CPU, the video part runs at resolution
{DEMO_VIDEO_RESOLUTION} (the image part at the model's 1024) and stops after
{DEMO_MAX_FRAMES} frames; --resolution sets both, --max-frames the number of frames. For the
whole clip at full resolution: sam2kit video -o DIR.
"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="run both workflows on the bundled photo and clip",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_options(p)
    p.add_argument("--max-frames", type=video._positive, default=DEMO_MAX_FRAMES, metavar="N",
                   help=f"frames of the clip to track (default: {DEMO_MAX_FRAMES}; the clip has 75)")
    add_model_options(p, resolution_help=(
        "the model's input size for both parts: a multiple of 32, at least 256 (default: 1024 "
        f"for the photo, {DEMO_VIDEO_RESOLUTION} for the clip)"))
    add_feedback_options(p)
    p.set_defaults(run=command)
    return p


def command(args, console: Console) -> tuple[dict, str]:
    check_model_options(args)
    image_args = ImageJob()  # the sample photo, a 3x3 grid
    video_args = VideoJob(max_frames=args.max_frames)  # the sample clip, the centre grid on frame 0
    video_resolution = args.resolution or DEMO_VIDEO_RESOLUTION
    with StagedOutput(args.output, args.overwrite) as out:
        (out / "image").mkdir()
        (out / "video").mkdir()
        model, info = load_model(args, console, args.resolution)
        console.note("image workflow: the sample photo, a 3x3 grid of clicks")
        image_results = image_job.run(image_args, console, out / "image", model, info)
        if model.config.image_size != video_resolution:
            del model
            model, info = load_model(args, console, video_resolution)
        console.note(f"video workflow: the sample clip, first {args.max_frames} frames at "
                     f"resolution {video_resolution}")
        video_results = video_job.run(video_args, console, out / "video", model, info)
    text = "\n".join([image.summary(image_results, args.output / "image"), "",
                      video.summary(video_results, args.output / "video"), "",
                      f"demo outputs in {args.output}"])
    return {"image": image_results, "video": video_results}, text
