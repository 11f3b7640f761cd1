"""`python -m kubemetrics`: the same as the `kubemetrics` command."""

import sys

from kubemetrics.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
