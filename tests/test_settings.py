"""The shared ``--settings`` parser (every stage reads its JSON object through it) and the checks of
the workflow config when the workflow is parsed (:mod:`pipelines.config_check`)."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main as cli_main
from pipelines.config_check import check_config, replace_sources, settings_errors
from pipelines.models.multiplicity_settings import MultiplicitySettings
from pipelines.settings import checked_value, settings_object, yaml11_number
from pipelines.training.settings import split_settings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
TINY = yaml.safe_load((ROOT / "tests" / "config" / "tiny.yaml").read_text())


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
        (
            '{"alpha": 1, "gamma": 2, "delta": 3}',
            r"unknown demo settings \['delta', 'gamma'\]; did you mean 'beta'\? \(known: ",
        ),
        ('{"alpah": 1}', r"unknown demo settings \['alpah'\]; did you mean 'alpha'\? \(known: alpha, beta, "),
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


def _config_error(edit, layers=()) -> str:
    """The one-line error of the tiny config after ``edit``."""
    config = copy.deepcopy(TINY)
    edit(config)
    with pytest.raises(ValueError) as info:
        check_config(config, SCHEMA, layers=layers, files="tiny.yaml")
    message = str(info.value)
    assert "\n" not in message and "not valid under any of the given schemas" not in message
    return message


def _gflash(config: dict) -> dict:
    return config["datasets"]["calo"]["source"]["embedded"]["settings"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c.update(sampl={}),
            "tiny.yaml: the config's top level: unknown key 'sampl'; did you mean 'sampling'? (allowed keys: "
            "datasets, evaluation, export, models, preprocessing, report, runs, sampling, seed)",
        ),
        (
            lambda c: c["models"]["tiny"].update(multiplicty={}),
            "tiny.yaml: models.tiny: unknown key 'multiplicty'; did you mean 'multiplicity'?",
        ),
        (
            lambda c: c["datasets"]["calo"].update(geometry=2),
            'tiny.yaml: datasets.calo.geometry: 2 is not allowed; allowed values: "2", "3", "1-photons", '
            '"1-pions" (write "2", quoted)',
        ),
        (
            lambda c: c["datasets"]["jets"].update(geometry="30"),
            'tiny.yaml: datasets.jets.geometry: "30" is not allowed; allowed values: 30, 150 '
            "(write 30, unquoted)",
        ),
        (
            lambda c: c["datasets"]["calo"]["source"]["embedded"].update(n_train=5),
            "tiny.yaml: datasets.calo.source.embedded.n_train: must be at least 10, got 5",
        ),
        (
            lambda c: c["datasets"]["calo"].update(kind="shower"),
            'tiny.yaml: datasets.calo.kind: "shower" is not allowed; allowed values: "showers", "jets"',
        ),
        (
            lambda c: c["datasets"]["jets"].pop("jet_type"),
            "tiny.yaml: datasets.jets: missing key 'jet_type' (required keys: jet_type)",
        ),
        (
            lambda c: c["datasets"]["calo"]["source"].update(files={"train": "a", "reference": "b"}),
            "tiny.yaml: datasets.calo.source: give exactly one of embedded or files, "
            "got ['embedded', 'files']",
        ),
        (
            lambda c: _gflash(c).update(kapa=2.0),
            "tiny.yaml: datasets.calo.source.embedded.settings: unknown generate-showers settings ['kapa']; "
            "did you mean 'kappa'?",
        ),
        (
            lambda c: _gflash(c).update(kappa=0),
            "tiny.yaml: datasets.calo.source.embedded.settings: GFlash setting kappa must be a positive",
        ),
        (
            lambda c: c["evaluation"]["showers"].update(classifier_runs=0),
            "tiny.yaml: evaluation.showers: classifier_runs must be >= 1, got 0",
        ),
        (
            lambda c: c["report"]["settings"].update(figure_width=0.5),
            "tiny.yaml: report.settings: report setting figure_width must be within 1..30 inches, got 0.5",
        ),
        (
            lambda c: c["report"]["settings"].update(ratio_range=[-1, 2]),
            "tiny.yaml: report.settings: report setting ratio_range must be [low, high] with 0 <= low < high",
        ),
        (
            lambda c: c["sampling"]["settings"].update(timing_batch_sizes=[]),
            "tiny.yaml: sampling.settings: timing_batch_sizes must be positive integers, got ()",
        ),
        (
            lambda c: c["evaluation"]["jets"].update(fpd_min_samples=100, fpd_max_samples=50),
            "tiny.yaml: evaluation.jets: setting fpd_max_samples (50) must be >= fpd_min_samples (100)",
        ),
        (
            lambda c: c["evaluation"]["jets"].update(seed=3),
            "tiny.yaml: evaluation.jets: seed is set by the workflow (the config's top-level seed), not here",
        ),
        (
            lambda c: c["models"]["tiny"]["multiplicity"].update(lr=-1.0),
            "tiny.yaml: models.tiny.multiplicity: lr must be > 0",
        ),
        (
            lambda c: c["datasets"]["calo"]["source"]["embedded"].update(
                n_train="2.5e1", n_reference="2.5e0"
            ),
            'tiny.yaml: datasets.calo.source.embedded.n_reference: "2.5e0" is not of type integer '
            "(YAML 1.1 reads 2.5e0 as a string, not a number: write 2.5)",
        ),
        (
            lambda c: c["preprocessing"].update(max_fit_points=-1),
            "tiny.yaml: preprocessing.max_fit_points: must be at least 0, got -1",
        ),
        (
            lambda c: c["datasets"]["calo"].update(geometry="1-pions"),
            "tiny.yaml: datasets.calo.source.embedded: GFlash makes electromagnetic showers (datasets "
            "1-photons, 2, 3); dataset 1-pions needs `source: files`",
        ),
        (
            lambda c: c["datasets"]["calo"]["source"]["embedded"].update(
                settings={"layer_depths_x0": [-1.0]}
            ),
            "tiny.yaml: datasets.calo.source.embedded.settings: layer_depths_x0 must be non-negative",
        ),
    ],
)
def test_config_mistakes_are_one_line_naming_the_key_and_the_fix(edit, message):
    assert _config_error(edit).startswith(message)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"max_step": 3},
            "family 'flow-matching' takes no settings ['max_step']; did you mean 'max_steps'? (loop",
        ),
        ({"hiden": 3}, "family 'flow-matching' takes no settings ['hiden']; did you mean 'hidden'? (loop"),
        ({"zzz": 3}, "family 'flow-matching' takes no settings ['zzz'] (loop settings: amp, "),
    ],
)
def test_a_misspelt_model_setting_gets_did_you_mean(values, message):
    with pytest.raises(ValueError) as info:
        split_settings("flow-matching", values)
    assert str(info.value).startswith(message)


def test_every_default_config_passes_its_checks():
    for path in (ROOT / "config.yaml", ROOT / "tests" / "config" / "tiny.yaml"):
        config = yaml.safe_load(path.read_text())
        check_config(config, SCHEMA)
        assert settings_errors(config) == []


def test_yaml11_number_strings_are_read_as_numbers():
    """PyYAML (YAML 1.1) reads ``3e-4`` as a string; the config and the stages take it as 0.0003."""
    text = "lr: 3e-4\nbig: 5E6\nplain: 1.5\nword: e5\n"
    values = yaml.safe_load(text)
    assert values == {"lr": "3e-4", "big": "5E6", "plain": 1.5, "word": "e5"}
    assert yaml11_number(values["lr"]) == 3e-4 and yaml11_number(values["big"]) == 5e6
    assert yaml11_number("e5") is None and yaml11_number(1.5) is None and yaml11_number("1e999") is None
    config = copy.deepcopy(TINY)
    config["preprocessing"]["max_fit_points"] = "5e6"  # the schema wants an integer: converted in place
    config["datasets"]["calo"]["source"]["embedded"]["settings"]["kappa"] = "2e0"
    config["models"]["tiny"]["multiplicity"]["lr"] = "3e-4"
    config["models"]["tiny"]["training"]["lr"] = "3e-4"
    check_config(config, SCHEMA)
    assert config["preprocessing"]["max_fit_points"] == 5_000_000
    assert MultiplicitySettings.from_json(json.dumps(config["models"]["tiny"]["multiplicity"])).lr == 3e-4
    loop, family = split_settings("flow-matching", config["models"]["tiny"]["training"])
    assert family.lr == 3e-4
    assert checked_value("x", "3e-4", float) == 3e-4
    with pytest.raises(
        ValueError,
        match=r"x must be int, got '3e4' \(YAML 1.1 reads 3e4 as a string, not a number: write 30000\)",
    ):
        checked_value("x", "3e4", int)


def test_a_files_source_replaces_the_embedded_one_it_overrides():
    own = {"files": {"train": "/d/train.h5", "reference": "/d/ref.h5"}}
    config = copy.deepcopy(TINY)
    config["datasets"]["calo"]["source"].update(copy.deepcopy(own))  # what Snakemake's merge gives
    replace_sources(config, [{"datasets": {"calo": {"geometry": "2", "source": own}}}])
    assert config["datasets"]["calo"]["source"] == own
    assert "embedded" in config["datasets"]["jets"]["source"]  # untouched: the layer names no source
    back = {"embedded": {"n_train": 50, "n_reference": 50}}
    config["datasets"]["calo"]["source"].update(copy.deepcopy(back))
    replace_sources(config, [{"datasets": {"calo": {"source": back}}}])
    assert config["datasets"]["calo"]["source"] == back


def test_the_workflow_config_check_imports_no_torch():
    code = (
        "import sys, yaml; from pipelines.config_check import check_config; "
        f"check_config(yaml.safe_load(open({str(ROOT / 'config.yaml')!r})), {str(SCHEMA)!r}); "
        "print(sorted(m for m in ('torch', 'scipy', 'sklearn', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
