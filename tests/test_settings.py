"""The shared ``--settings`` parser: every stage reads its JSON object through it."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.cli import main as cli_main
from pipelines.settings import settings_object


@dataclasses.dataclass
class Example:
    alpha: float = 1.0
    beta: int = 2


def test_accepts_json_text_mappings_and_nothing():
    assert settings_object('{"alpha": 0.5}', Example, "demo") == {"alpha": 0.5}
    assert settings_object({"beta": 3}, Example, "demo") == {"beta": 3}
    assert settings_object(None, Example, "demo") == {}
    assert settings_object("  ", Example, "demo") == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"alpha": ', "demo --settings is not valid JSON"),
        ("[1, 2]", "demo --settings must be a JSON object, got list"),
        ('{"alpha": 1, "gamma": 2, "delta": 3}', r"unknown demo settings \['delta', 'gamma'\]"),
    ],
)
def test_bad_settings_name_the_stage_and_the_problem(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        settings_object(text, Example, "demo")


def test_a_stage_reports_an_unknown_setting_as_a_clear_error(tmp_path, capsys):
    out = tmp_path / "showers.h5"
    argv = [
        "generate-showers",
        "--n-showers",
        "10",
        "--seed",
        "1",
        "--out",
        str(out),
        "--settings",
        '{"n_showerz": 1}',
    ]
    assert cli_main(argv) == 1
    assert "unknown generate-showers settings ['n_showerz']" in capsys.readouterr().err
    assert not out.exists()
