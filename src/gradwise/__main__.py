"""``python -m gradwise``: the command line (what ``torchrun -m gradwise`` runs)."""

import sys

from .cli import main

sys.exit(main())
