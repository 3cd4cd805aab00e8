"""``python -m sam2kit``: the command line (see ``sam2kit --help``)."""

import sys

from .cli import main

sys.exit(main())
