"""`python -m gmmcli` runs the gmm command."""

from .cli import main

# Guarded: Dask's worker processes (--engine dask) are spawned and import this module again.
if __name__ == "__main__":
    main()
