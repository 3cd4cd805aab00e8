"""Deprecated path: ``sam2kit.automatic`` moved to ``sam2kit.image.automatic``. Import SAM2AutomaticMaskGenerator from
``sam2kit`` (or ``sam2kit.image.automatic``); this module re-exports everything there and will be removed
in a later release."""

import warnings

from sam2kit.image.automatic import *  # noqa: F401,F403 - the names users imported from here
from sam2kit.image.automatic import SAM2AutomaticMaskGenerator  # noqa: F401
import sam2kit.image.automatic as _moved

warnings.warn("sam2kit.automatic is deprecated: import SAM2AutomaticMaskGenerator from sam2kit (or sam2kit.image.automatic)",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str):  # private helpers too, for code that reached into the old module
    return getattr(_moved, name)
