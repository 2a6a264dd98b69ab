"""``python -m rserpool``: same as the ``rserpool`` console script."""

from __future__ import annotations

import sys

from rserpool.cli import main

if __name__ == "__main__":
    sys.exit(main())
