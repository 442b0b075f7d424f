"""``python -m fsparse``: the ``fsparse`` command line (``sparsify``, ``inspect``, ``demo``)."""

import sys

try:
    from fsparse.cli import main
except ImportError as err:  # the command line needs the `cli` extra
    sys.exit(
        f"fsparse: error: the command line needs the cli extra ({err}); "
        "install it with: pip install 'fsparse[cli]'"
    )

if __name__ == "__main__":
    main()
