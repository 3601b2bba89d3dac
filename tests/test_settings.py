"""The shared ``--settings`` parser: every stage reads its JSON object through it."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.cli import main as cli_main
from pipelines.settings import checked_value, settings_object


@dataclasses.dataclass
class Example:
    alpha: float = 1.0
    beta: int = 2
    sizes: tuple[int, ...] = ()
    span: tuple[float, float] = (0.0, 1.0)
    limit: int | None = None


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


def test_values_are_checked_and_converted_by_their_field_types():
    got = settings_object('{"alpha": 2, "sizes": [1, 2], "span": [0, 3], "limit": null}', Example, "demo")
    assert got == {"alpha": 2.0, "sizes": (1, 2), "span": (0.0, 3.0), "limit": None}
    assert type(got["alpha"]) is float and type(got["span"][1]) is float
    assert checked_value("x", 7, int | None) == 7 and checked_value("x", True, bool) is True
    assert checked_value("x", "a", str) == "a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"beta": 2.5}', "demo setting beta must be int, got 2.5"),
        ('{"beta": true}', "demo setting beta must be int, got True"),
        ('{"alpha": "1"}', "demo setting alpha must be float, got '1'"),
        ('{"alpha": false}', "demo setting alpha must be float, got False"),
        ('{"sizes": 3}', "demo setting sizes must be a list, got 3"),
        ('{"sizes": [1, "2"]}', "demo setting sizes must be int, got '2'"),
        ('{"span": [1, 2, 3]}', r"demo setting span must have 2 entries, got \[1, 2, 3\]"),
        ('{"limit": 1.5}', r"demo setting limit must be int \| None, got 1.5"),
    ],
)
def test_wrongly_typed_values_are_errors(text: str, message: str):
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
