"""``python -m addon`` runs the ``hipchat-addon`` command line."""

from __future__ import annotations

import sys

from addon.cli import main

sys.exit(main())
