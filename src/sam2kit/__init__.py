"""sam2kit: a lean, fast toolkit for Segment Anything Model 2 (SAM 2 and SAM 2.1)."""

from .automatic import SAM2AutomaticMaskGenerator
from .build import CheckpointError, CheckpointNotFoundError, build_sam2, build_sam2_video_predictor
from .configs import CONFIGS, SAM2Config, get_config
from .predictor import SAM2ImagePredictor
from .session import VideoSession
from .video_predictor import SAM2VideoPredictor

__version__ = "0.1.0"

__all__ = ["build_sam2", "build_sam2_video_predictor", "SAM2ImagePredictor", "SAM2VideoPredictor",
           "SAM2AutomaticMaskGenerator",
           "VideoSession", "SAM2Config", "CONFIGS", "get_config",
           "CheckpointError", "CheckpointNotFoundError", "__version__"]
