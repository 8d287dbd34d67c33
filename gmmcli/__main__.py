"""`python -m gmmcli` runs the gmm command."""

from .cli import main

main()
