"""python -m kubemetrics_sim"""

import sys

from .cli import main

# Guarded so that importing every module (as the install test does) never starts a simulator.
if __name__ == "__main__":
    sys.exit(main())
