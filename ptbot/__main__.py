"""``python -m ptbot``: the same command line as the ``ptbot`` console script."""

from ptbot.cli import main

main()
