"""Deprecated path: ``sam2kit.predictor`` moved to ``sam2kit.image.predictor``. Import SAM2ImagePredictor from
``sam2kit`` (or ``sam2kit.image.predictor``); this module re-exports everything there and will be removed
in a later release."""

import warnings

from sam2kit.image.predictor import *  # noqa: F401,F403 - the names users imported from here
from sam2kit.image.predictor import SAM2ImagePredictor  # noqa: F401
import sam2kit.image.predictor as _moved

warnings.warn("sam2kit.predictor is deprecated: import SAM2ImagePredictor from sam2kit (or sam2kit.image.predictor)",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str):  # private helpers too, for code that reached into the old module
    return getattr(_moved, name)
