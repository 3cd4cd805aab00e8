"""The image engine: ``SAM2ImagePredictor`` (``predictor``), automatic masks
(``automatic``, ``amg``), the model's input transforms and mask post-processing, and reading
pictures (``io``)."""
