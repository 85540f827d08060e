"""``python -m udalib``: see udalib.cli."""

import sys

from .cli import main

sys.exit(main())
