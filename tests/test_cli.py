"""Tests of the command line: the stage list, "did you mean" for unknown stages, and each stage's
``--help`` listing its settings keys with defaults and meanings."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass

import pytest

from pipelines import cli
from pipelines.settings_help import field_meanings, settings_help


def test_top_level_help_lists_every_stage_on_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("usage: python -m pipelines <stage>")
    for name, stage in cli.STAGES.items():
        (line,) = [line for line in lines if line.strip().startswith(name + " ")]
        assert line.split(None, 1)[1] == stage.summary
    assert cli.main([]) == 2
    assert "stages:" in capsys.readouterr().err


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "pipelines", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "evaluate-showers" in result.stdout


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        ("evalute-jets", "'evaluate-jets'"),
        ("reprot", "'report'"),
        ("train_multiplicity", "'train-multiplicity'"),
    ],
)
def test_unknown_stage_gets_did_you_mean(capsys, typed, suggested):
    assert cli.main([typed, "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: unknown stage {typed!r}; did you mean {suggested}")
    assert "stages: generate-showers, " in err


def test_unknown_stage_without_a_close_name(capsys):
    assert cli.main(["zzz"]) == 2
    err = capsys.readouterr().err
    assert "did you mean" not in err and err.startswith("error: unknown stage 'zzz'\nstages: ")


def test_stage_help_lists_arguments_and_settings_with_defaults_and_meanings(capsys):
    assert cli.main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--metrics" in out and "--training-summary" in out  # the stage's own argparse help
    assert "report settings (keys of the --settings JSON object, with defaults):" in out
    assert "  dpi = 110\n      PNG resolution, dots per inch." in out
    assert "  ratio_range = [0.5, 1.5]\n      y range of ratio panels and ratio images." in out
    assert cli.main(["validate", "-h"]) == 0
    assert "settings (keys of" not in capsys.readouterr().out  # validate takes no --settings


def test_train_help_lists_loop_and_every_family():
    from pipelines.models.settings import FAMILY_SPECS
    from pipelines.training.settings import LoopSettings

    text = cli.stage_settings_help("train")
    assert text.startswith("train settings of the loop (every family)")
    for cls in [LoopSettings] + [spec.settings for spec in FAMILY_SPECS.values()]:
        for field in dataclasses.fields(cls):
            assert f"\n  {field.name} = " in text, (cls.__name__, field.name)
    for family in FAMILY_SPECS:
        assert f"train settings of family {family!r} (--family {family})" in text


@pytest.mark.parametrize("stage", [name for name, stage in cli.STAGES.items() if stage.settings])
def test_every_settings_key_has_a_meaning(stage):
    classes = [cli._settings_class(path) for path in cli.STAGES[stage].settings]
    if stage == "train":
        from pipelines.models.settings import FAMILY_SPECS

        classes += [spec.settings for spec in FAMILY_SPECS.values()]
    for cls in classes:
        meanings = field_meanings(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not meanings.get(f.name)]
        assert not missing, f"{cls.__name__} documents no meaning for {missing}"


@dataclass(frozen=True)
class _Base:
    """Base settings.

    alpha, beta: two shared knobs; gamma: a third. Budget: delta and epsilon together.
    """

    alpha: int = 1
    beta: float = 0.5
    gamma: str = "x"
    delta: int | None = None
    epsilon: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class _Child(_Base):
    """Child settings ("zeta" in quotes is not a mention)."""

    #: documented above,
    #: on two lines
    eta: bool = True
    theta: int = 3  # documented after
    zeta: int = 0  # fmt: skip
    beta_prime: int = dataclasses.field(default_factory=lambda: 7)


def test_field_meanings_from_comments_and_docstrings():
    meanings = field_meanings(_Child)
    assert meanings == {
        "alpha": "two shared knobs",
        "beta": "two shared knobs",
        "gamma": "a third",
        "delta": "Budget: delta and epsilon together",
        "epsilon": "Budget: delta and epsilon together",
        "eta": "documented above, on two lines",
        "theta": "documented after",
    }
    text = settings_help(_Child, "child settings")
    assert "  epsilon = [1, 2]\n" in text and "  delta = null\n" in text and "  beta_prime = 7" in text
    assert "  zeta = 0\n  beta_prime" in text  # no meaning: the key and default only
