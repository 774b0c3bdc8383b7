"""`python -m rhinobox` runs the command-line interface."""

import sys

from rhinobox.cli import main

if __name__ == "__main__":
    sys.exit(main())
