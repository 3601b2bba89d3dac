"""Tests of the command line: the stage list, "did you mean" for unknown stages, each stage's
``--help`` listing its settings keys with defaults and meanings, and progress as plain lines in logs."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from dataclasses import dataclass

import pytest
from tqdm import tqdm

from pipelines import cli
from pipelines.progress import LineProgress, progress
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


# ---------------------------------------------------------------- progress in logs


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_in_a_log():
    assert isinstance(progress(total=3, file=_Terminal(), disable=True), tqdm)
    log = io.StringIO()
    bar = progress(total=100, desc="train", unit="step", file=log, dynamic_ncols=True)
    assert isinstance(bar, LineProgress)
    for step in range(1, 101):
        if step == 30:
            bar.set_postfix({"loss": "0.5"}, val_figure=0.125)
        bar.update(1)
    bar.close()
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert [line.split(" ", 2)[1] for line in lines] == [f"{k}/100" for k in range(10, 101, 10)]
    assert lines[0].startswith("train: 10/100 step (10%), ") and "elapsed" in lines[0]
    assert "loss" not in lines[1] and lines[2].endswith(", loss=0.5 val_figure=0.125")


def test_plain_progress_lines_without_a_total_and_at_the_end():
    log = io.StringIO()
    with LineProgress(desc="EFPs", unit="chunk", file=log, every_s=0.0) as bar:
        bar.update(3)
        bar.update(2)
    assert "\r" not in log.getvalue()
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == ["EFPs: 3 chunk", "EFPs: 5 chunk"]
    log = io.StringIO()
    items = list(LineProgress(range(7), desc="epochs", file=log, every_fraction=0.5))
    assert items == list(range(7))
    shown = [line.split(",")[0] for line in log.getvalue().splitlines()]
    assert shown == ["epochs: 4/7 it (57%)", "epochs: 7/7 it (100%)"]  # marks at 3.5 and 7
    log = io.StringIO()
    quiet = LineProgress(total=5, file=log, disable=True)
    quiet.update(5)
    quiet.close()
    assert log.getvalue() == ""
