"""Video object segmentation over datasets: benchmark layouts (``datasets``: DAVIS, SA-V,
YouTube-VOS), semi-supervised runs as Meta's ``tools/vos_inference.py`` (``run``), and J&F
scoring as the official evaluators (``evaluation``)."""
