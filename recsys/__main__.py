"""``python -m recsys`` (also what ``torchrun -m recsys`` runs)."""

import sys

from recsys.cli import main

sys.exit(main())
