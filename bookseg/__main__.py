"""`python -m bookseg ...`: the same command line as the `bookseg` console script."""

import sys

from bookseg.cli import main

if __name__ == "__main__":
    sys.exit(main())
