"""`python -m models.ingest '<request json>'`: the bounded subprocess of models/ingest/isolated.py."""

import sys

from models.ingest.isolated import child_main

if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
