"""Command-line entry points: ``python -m pipelines <stage> [args]`` (one stage per workflow rule)."""

from __future__ import annotations

import importlib
import logging
import sys

from pipelines.io.errors import BusyError, DataError

#: stage name -> module whose ``main(argv)`` runs it
STAGES = {
    "generate-showers": "pipelines.generate.gflash",
    "generate-jets": "pipelines.generate.pythia_jets",
    "validate": "pipelines.validate",
    "convert": "pipelines.convert",
    "fit-transforms": "pipelines.transforms",
    "train-multiplicity": "pipelines.models.multiplicity",
    "train": "pipelines.train",
    "sample": "pipelines.sample",
    "evaluate-showers": "pipelines.metrics.evaluate_showers",
    "evaluate-jets": "pipelines.metrics.evaluate_jets",
    "report": "pipelines.report.html",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        print("usage: python -m pipelines <stage> [args]\nstages: " + ", ".join(STAGES), file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(STAGES[argv[0]])
    try:
        return int(module.main(argv[1:]) or 0)
    except (BusyError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
