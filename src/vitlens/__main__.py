"""``python -m vitlens`` runs the command line (``torchrun ... -m vitlens bench CFG --out D`` starts workers)."""

import sys

from .cli import main

sys.exit(main())
