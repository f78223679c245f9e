"""``python -m kdna``: the same command line as the ``kdna`` console script."""

import sys

from kdna.cli import main

sys.exit(main())
