"""`python -m loadtests.bench`: see loadtests/bench/__init__.py and `--help`."""

import sys

from loadtests.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
