"""sam2kit: a lean, fast toolkit for Segment Anything Model 2 (SAM 2 and SAM 2.1).

The public names below are imported when first used (PEP 562), so that ``import sam2kit`` costs
nothing and parts that need no PyTorch (the ONNX runtime, the error types) import without it.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "SAM2AutomaticMaskGenerator": "sam2kit.image.automatic",
    "CheckpointError": "sam2kit.build",
    "CheckpointNotFoundError": "sam2kit.build",
    "build_sam2": "sam2kit.build",
    "load_model": "sam2kit.build",
    "model_id": "sam2kit.build",
    "CONFIGS": "sam2kit.configs",
    "SAM2Config": "sam2kit.configs",
    "get_config": "sam2kit.configs",
    "release_free_memory": "sam2kit.devices",
    "tune_cpu_allocator": "sam2kit.devices",
    "SAM2ImagePredictor": "sam2kit.image.predictor",
    "VideoSession": "sam2kit.video.session",
    "SpillLimitError": "sam2kit.video.spill",
    "SAM2VideoPredictor": "sam2kit.video.predictor",
    "build_sam2_video_predictor": "sam2kit.video.predictor",
}

__all__ = ["load_model", "model_id", "build_sam2", "build_sam2_video_predictor", "SAM2ImagePredictor",
           "SAM2VideoPredictor", "SAM2AutomaticMaskGenerator", "VideoSession", "SAM2Config", "CONFIGS",
           "get_config", "tune_cpu_allocator", "release_free_memory", "SpillLimitError",
           "CheckpointError", "CheckpointNotFoundError", "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sam2kit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
