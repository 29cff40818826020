"""``python -m mlkube.kubectl``: the plugin without its console script (``kubectl-mlkube``)."""

import sys

from mlkube.kubectl.cli import main

sys.exit(main(prog="kubectl mlkube"))
