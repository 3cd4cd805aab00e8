"""The video engine: ``SAM2VideoPredictor`` (``predictor``), the per-video state
(``session.VideoSession``) and live stream sessions (``stream_session``), frames on demand from
files and folders (``io``) and from live sources (``sources``), and the spill folder (``spill``).
Nothing is imported here, so that torch-free parts (frame reading) can be used alone."""
