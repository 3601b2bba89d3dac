"""``python -m pipelines train`` with the test family registered, as a script for torchrun:
``torchrun --standalone --nproc-per-node 2 tests/toy_train.py --clouds ... --family toy-gaussian ...``."""

import sys

import toy_family  # noqa: F401  (registers "toy-gaussian")

from pipelines.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
