"""`python -m pybonsai`: the command line (see pybonsai.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
