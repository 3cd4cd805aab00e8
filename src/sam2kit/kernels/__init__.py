"""Kernels: fast paths of the model's hot operations (fused linear layers, chunked and bf16
attention) and the measured choice between them on this machine (``tuning``). The model
(``sam2kit.modeling``) calls these; nothing here imports the model. Importing this package
registers the kernel choices of ``linear`` and ``attention``."""

from sam2kit.kernels import attention, linear, tuning

__all__ = ["attention", "linear", "tuning"]
