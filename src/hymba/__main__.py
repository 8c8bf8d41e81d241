"""``python -m hymba``: the ``hymba`` command."""

import sys

from hymba.cli import main

sys.exit(main())
