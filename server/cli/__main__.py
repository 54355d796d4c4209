"""``python -m server.cli``: the same command line as ``openastro``."""

from server.cli import main

main()
