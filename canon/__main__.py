"""``python -m canon``: the command line."""

from canon.cli import main

main()
