"""Deprecated path: ``sam2kit.video_predictor`` moved to ``sam2kit.video.predictor``. Import SAM2VideoPredictor, build_sam2_video_predictor from
``sam2kit`` (or ``sam2kit.video.predictor``); this module re-exports everything there and will be removed
in a later release."""

import warnings

from sam2kit.video.predictor import *  # noqa: F401,F403 - the names users imported from here
from sam2kit.video.predictor import SAM2VideoPredictor, build_sam2_video_predictor  # noqa: F401
import sam2kit.video.predictor as _moved

warnings.warn("sam2kit.video_predictor is deprecated: import SAM2VideoPredictor, build_sam2_video_predictor from sam2kit (or sam2kit.video.predictor)",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str):  # private helpers too, for code that reached into the old module
    return getattr(_moved, name)
