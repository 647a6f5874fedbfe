"""`python -m kvgate ...` is the `kvgate` console script."""

import sys

from kvgate.cli import main

sys.exit(main())
