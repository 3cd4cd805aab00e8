"""sam2kit: a lean, fast toolkit for Segment Anything Model 2 (SAM 2 and SAM 2.1)."""

from .automatic import SAM2AutomaticMaskGenerator
from .build import CheckpointError, CheckpointNotFoundError, build_sam2, load_model, model_id
from .configs import CONFIGS, SAM2Config, get_config
from .devices import release_free_memory, tune_cpu_allocator
from .predictor import SAM2ImagePredictor
from .session import VideoSession
from .spill import SpillLimitError
from .video_predictor import SAM2VideoPredictor, build_sam2_video_predictor

__version__ = "0.1.0"

__all__ = ["load_model", "model_id", "build_sam2", "build_sam2_video_predictor", "SAM2ImagePredictor",
           "SAM2VideoPredictor", "SAM2AutomaticMaskGenerator", "VideoSession", "SAM2Config", "CONFIGS",
           "get_config", "tune_cpu_allocator", "release_free_memory", "SpillLimitError",
           "CheckpointError", "CheckpointNotFoundError", "__version__"]
