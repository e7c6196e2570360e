"""`python -m ghntrain train|evaluate ...` (also `python -m ghn train|evaluate ...`)."""

import sys

from ghntrain import main

if __name__ == "__main__":
    sys.exit(main())
