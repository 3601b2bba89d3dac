"""Command-line entry points: ``python -m pipelines <stage> [args]`` (one stage per workflow rule).

``python -m pipelines --help`` lists the stages; ``python -m pipelines <stage> --help`` shows the
stage's arguments and, where it takes a ``--settings`` JSON object, every settings key with its default
and meaning (read from the stage's settings dataclass, :mod:`pipelines.settings_help`). An unknown
stage name gets the closest known names. A stage ends when its parent process dies
(:mod:`pipelines.lifeline`), and an OS error (disk full, quota, read-only or forbidden output) is one
line naming the file (:mod:`pipelines.io.oserrors`).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import sys
from typing import NamedTuple

from pipelines import lifeline
from pipelines.io.errors import BusyError, DataError
from pipelines.io.oserrors import describe_os_error
from pipelines.settings_help import settings_help


class Stage(NamedTuple):
    """A stage: the module whose ``main(argv)`` runs it, one line on what it does, and its settings
    dataclasses as ``module:Class`` (none where the stage takes no ``--settings``)."""

    module: str
    summary: str
    settings: tuple[str, ...] = ()


STAGES: dict[str, Stage] = {
    "generate-showers": Stage(
        "pipelines.generate.gflash",
        "simulate GFlash showers in a CaloChallenge geometry (embedded data set)",
        ("pipelines.generate.gflash_settings:GFlashSettings",),
    ),
    "generate-jets": Stage(
        "pipelines.generate.pythia_jets",
        "generate JetNet-like jets with Pythia 8 and FastJet (embedded data set)",
        ("pipelines.generate.pythia_settings:JetGenSettings",),
    ),
    "merge-jets": Stage(
        "pipelines.merge_jets", "JetNet files of one jet type each -> one file with JetNet's type column"
    ),
    "validate": Stage(
        "pipelines.validate", "check a CaloChallenge or JetNet file completely, record a summary"
    ),
    "convert": Stage(
        "pipelines.convert", "showers or jets -> point clouds with a seeded train/validation split"
    ),
    "fit-transforms": Stage(
        "pipelines.transforms",
        "fit the invertible point-feature preprocessing on the training split",
        ("pipelines.transforms_settings:FitSettings",),
    ),
    "train-multiplicity": Stage(
        "pipelines.models.multiplicity",
        "fit the multiplicity model p(n | E_inc) (showers), p(n) or p(n | type) (jets)",
        ("pipelines.models.multiplicity_settings:MultiplicitySettings",),
    ),
    "train": Stage(
        "pipelines.train",
        "train (or resume) one model family and export the model",
        ("pipelines.training.settings:LoopSettings",),
    ),
    "sample": Stage(
        "pipelines.sample",
        "generate showers or jets with a trained model, in the input file format, and time it",
        ("pipelines.sample_settings:SampleSettings",),
    ),
    "export": Stage(
        "pipelines.export",
        "export a trained model's sampler to ONNX for fast simulation, checked against torch and timed",
        ("pipelines.export_settings:ExportSettings",),
    ),
    "evaluate-showers": Stage(
        "pipelines.metrics.evaluate_showers",
        "CaloChallenge metrics of generated showers against the reference (and real vs real)",
        ("pipelines.metrics.settings:EvaluateShowersSettings",),
    ),
    "evaluate-jets": Stage(
        "pipelines.metrics.evaluate_jets",
        "JetNet metrics of generated jets against the reference (and real vs real)",
        ("pipelines.metrics.settings:EvaluateJetsSettings",),
    ),
    "report": Stage(
        "pipelines.report.html",
        "HTML validation page: verdict, metrics against real vs real, plots, training, timing",
        ("pipelines.report.settings:ReportSettings",),
    ),
    "metrics-table": Stage(
        "pipelines.report.metrics_table",
        "a run's metrics.json as tables: metrics.parquet (pandas, polars) and metrics.tsv",
    ),
    "compare": Stage(
        "pipelines.report.compare",
        "one page per data set: every run's key metrics against real vs real, sortable, overlaid plots",
        ("pipelines.report.settings:ReportSettings",),
    ),
}

USAGE = "usage: python -m pipelines <stage> [args]   (python -m pipelines <stage> --help for its arguments)"


def overview() -> str:
    """The top-level help: usage and one line per stage."""
    width = max(len(name) for name in STAGES)
    lines = [USAGE, "", "stages:"]
    lines += [f"  {name:<{width}}  {stage.summary}" for name, stage in STAGES.items()]
    return "\n".join(lines)


def unknown_stage(name: str) -> str:
    """The message for a stage name that does not exist, with the closest names ("did you mean")."""
    close = difflib.get_close_matches(name, list(STAGES), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"error: unknown stage {name!r}{hint}\nstages: {', '.join(STAGES)}"


def _settings_class(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def stage_settings_help(name: str) -> str:
    """Every settings key of stage ``name`` with default and meaning ("" when it takes no settings).
    For ``train`` the loop's keys are followed by each model family's own."""
    stage = STAGES[name]
    sections = [settings_help(_settings_class(path), f"{name} settings") for path in stage.settings]
    if name == "train":
        from pipelines.models.settings import FAMILY_SPECS

        sections[0] = sections[0].replace(f"{name} settings", "train settings of the loop (every family)", 1)
        sections += [
            settings_help(spec.settings, f"train settings of family {family!r} (--family {family})")
            for family, spec in FAMILY_SPECS.items()
        ]
    return "\n\n".join(sections)


def _stage_help(name: str) -> int:
    """Print the stage's argparse help, then its settings keys."""
    module = importlib.import_module(STAGES[name].module)
    try:
        module.main(["--help"])
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return int(exit_.code) if isinstance(exit_.code, int) else 2
    text = stage_settings_help(name)
    if text:
        print("\n" + text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``argv[0]`` as a stage with the remaining arguments (help and errors as described above)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(overview(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in STAGES:
        print(unknown_stage(argv[0]), file=sys.stderr)
        return 2
    if any(arg in ("-h", "--help") for arg in argv[1:]):
        return _stage_help(argv[0])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(STAGES[argv[0]].module)
    try:
        return int(module.main(argv[1:]) or 0)
    except (BusyError, DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {describe_os_error(err)}", file=sys.stderr)
        return 1


def entry() -> None:
    """``python -m pipelines``: end with the parent process (:func:`lifeline.exit_with_parent`), run
    :func:`main` and exit with its status."""
    lifeline.exit_with_parent()
    sys.exit(main())
