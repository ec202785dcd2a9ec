"""`python -m dftui` runs the command line (same as the `dftui` console script)."""

import sys

from dftui.cli import main

if __name__ == "__main__":
    sys.exit(main())
