import sys

from core.frontends.cli import main

if __name__ == "__main__":  # worker processes (spawn) import this module again: they must not rerun the command
    sys.exit(main())
