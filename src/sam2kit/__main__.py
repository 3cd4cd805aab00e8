"""``python -m sam2kit``: the command line (see ``sam2kit --help``)."""

import sys

from sam2kit.cli import main

sys.exit(main())
