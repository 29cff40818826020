"""``kubectl mlkube``: the command line for people running releases (see docs/cli.md)."""
