"""Prompts written on the command line: argparse types over the library's prompt language
(``sam2kit.jobs.prompts``: the forms, the typed specs and the checks against the picture).

    image:  --point X,Y[:LABEL]          --box X0,Y0,X1,Y1           --grid ROWSxCOLS
    video:  --point FRAME:X,Y[:LABEL][@OBJ]   --box FRAME:X0,Y0,X1,Y1[@OBJ]   (OBJ: 1 by default)
"""

from __future__ import annotations

import argparse
import functools

from sam2kit.jobs import prompts as _p
from sam2kit.jobs.prompts import (COORDINATES_HELP, BoxSpec, PointSpec, Prompt, image_prompts,  # noqa: F401
                                  video_prompts)


def _argtype(parse):
    """``parse`` as an argparse type: its PromptError becomes argparse's usage error, verbatim."""
    @functools.wraps(parse)
    def wrapped(text: str):
        try:
            return parse(text)
        except _p.PromptError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return wrapped


image_point = _argtype(_p.image_point)
image_box = _argtype(_p.image_box)
video_point = _argtype(_p.video_point)
video_box = _argtype(_p.video_box)
grid = _argtype(_p.grid)
