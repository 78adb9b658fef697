"""``python -m runtime.cli``: the same as the ``sluiceway`` command."""

from __future__ import annotations

import sys

from runtime.cli.main import main

sys.exit(main())
