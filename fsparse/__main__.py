"""``python -m fsparse demo``: the built-in end-to-end run of the functional API."""

import sys

from fsparse._src.demo import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
