"""``python -m aether``: the ``aether`` command line."""

from aether.cli import main

if __name__ == "__main__":
    main()
