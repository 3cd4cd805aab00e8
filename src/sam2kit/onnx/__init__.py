"""SAM 2 on ONNX Runtime: export a model (``export_onnx``, needs PyTorch and ``onnx``) and run
the export without PyTorch (``OnnxImagePredictor``, ``OnnxVideoPredictor``: ONNX Runtime, NumPy,
Pillow, and PyAV for video files; ``pip install 'sam2kit[onnx]'``).

Importing this package imports no PyTorch; ``export_onnx`` loads the exporter when first used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "OnnxImagePredictor": "sam2kit.onnx.image",
    "OnnxVideoPredictor": "sam2kit.onnx.video",
    "OnnxSAM2": "sam2kit.onnx.model",
    "OnnxModelError": "sam2kit.onnx.model",
    "export_onnx": "sam2kit.onnx.export",
    "export_pretrained": "sam2kit.onnx.export",
    "ExportError": "sam2kit.onnx.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sam2kit.onnx' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
