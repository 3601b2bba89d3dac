"""Checks of the workflow config when the workflow is parsed, before any job runs (torch-free).

:func:`check_config` lets a data set's ``source`` from a later config file (``--configfile``) or
``--config`` replace the one it overrides (Snakemake merges nested mappings, which would put a user's
``files`` next to the embedded generator), reads YAML 1.1 strings such as ``3e-4`` as the numbers
they mean where the schema wants a number, and validates against the JSON schema with one line per
mistake: the key's path, the problem and the fix (allowed values, "did you mean ..."), never a bare
"not valid under any of the given schemas". Every settings block is then built with its stage's
settings dataclass (:func:`settings_errors`): the dataclasses are the one definition of the keys,
types and limits (the schema only places the blocks), so a value a stage would reject stops the
workflow before any job runs.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

from pipelines.export_settings import ExportSettings
from pipelines.generate.gflash_settings import DATASET_DEFAULTS, GFLASH_DATASETS, GFlashSettings
from pipelines.generate.pythia_settings import JetGenSettings
from pipelines.jet_types import parse_jet_types
from pipelines.metrics.settings import EvaluateJetsSettings, EvaluateShowersSettings
from pipelines.models.multiplicity_settings import MultiplicitySettings
from pipelines.report.settings import ReportSettings
from pipelines.sample_settings import SampleSettings
from pipelines.settings import settings_object, yaml11_hint, yaml11_number
from pipelines.transforms_settings import FitSettings

SOURCES = ("embedded", "files")


def replace_sources(config: dict, layers: Iterable[Mapping]) -> None:
    """Let each layer's data-set ``source`` replace the merged one (in place).

    ``layers`` are the config mappings merged over the workflow's own config, in order (each
    ``--configfile``, then ``--config``). Where a layer gives a data set a ``files`` (or an
    ``embedded``) source, the other kind of source that Snakemake's merge kept is dropped.
    """
    datasets = config.get("datasets")
    if not isinstance(datasets, dict):
        return
    for layer in layers:
        for name, entry in (layer.get("datasets") or {}).items():
            source = entry.get("source") if isinstance(entry, Mapping) else None
            merged = datasets.get(name, {}).get("source") if isinstance(datasets.get(name), dict) else None
            if not (isinstance(source, Mapping) and isinstance(merged, dict)):
                continue
            given = set(source) & set(SOURCES)
            if given:
                for key in set(merged) & set(SOURCES) - given:
                    del merged[key]


def _set(config: Any, path: Sequence, value: Any) -> None:
    for key in path[:-1]:
        config = config[key]
    config[path[-1]] = value


def _types(schema: Mapping) -> set[str]:
    kind = schema.get("type", ())
    return {kind} if isinstance(kind, str) else set(kind)


def _number_for(value: Any, schema: Mapping) -> float | int | None:
    """``value`` as the number the schema wants, where it is a YAML 1.1 number string."""
    number = yaml11_number(value)
    if number is None:
        return None
    if "number" in _types(schema):
        return number
    if "integer" in _types(schema) and number.is_integer():
        return int(number)
    return None


def _key_path(path: Iterable) -> str:
    return ".".join(str(p) for p in path) or "the config's top level"


def _known_keys(schema: Mapping) -> list[str]:
    return sorted(schema.get("properties", {}))


def _unknown_key_message(where: str, instance: Mapping, schema: Mapping) -> str:
    known = _known_keys(schema)
    unknown = sorted(set(instance) - set(known))
    key = unknown[0]
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{where}: unknown key {key!r}{hint} (allowed keys: {', '.join(known)})"


def _enum_message(where: str, instance: Any, allowed: Sequence) -> str:
    choices = ", ".join(map(json.dumps, allowed))
    text = f"{where}: {json.dumps(instance)} is not allowed; allowed values: {choices}"
    same = [a for a in allowed if str(a) == str(instance) and type(a) is not type(instance)]
    if same:
        text += f" (write {json.dumps(same[0])}{', quoted' if isinstance(same[0], str) else ', unquoted'})"
    return text


_BOUNDS = {
    "minimum": "at least",
    "maximum": "at most",
    "exclusiveMinimum": "greater than",
    "exclusiveMaximum": "less than",
}


def describe_error(error: jsonschema.ValidationError) -> str:
    """One line for a schema error: the key's path, the problem and what is allowed."""
    where = _key_path(error.absolute_path)
    value, kind, schema = error.instance, error.validator, error.schema
    if kind == "additionalProperties" and isinstance(value, Mapping):
        return _unknown_key_message(where, value, schema)
    if kind == "enum":
        return _enum_message(where, value, error.validator_value)
    if kind == "const":
        return _enum_message(where, value, [error.validator_value])
    if kind == "required":
        missing = [key for key in error.validator_value if key not in value]
        return f"{where}: missing key {missing[0]!r} (required keys: {', '.join(error.validator_value)})"
    if kind == "type":
        wanted = " or ".join(sorted(_types(schema)))
        return f"{where}: {json.dumps(value)} is not of type {wanted}{yaml11_hint(value)}"
    if kind in _BOUNDS:
        return f"{where}: must be {_BOUNDS[kind]} {error.validator_value}, got {json.dumps(value)}"
    if kind in ("minItems", "maxItems"):
        size = "at least" if kind == "minItems" else "at most"
        return f"{where}: needs {size} {error.validator_value} entries, got {json.dumps(value)}"
    if kind in ("minProperties", "maxProperties") and set(_known_keys(schema)) == set(SOURCES):
        return f"{where}: give exactly one of {' or '.join(SOURCES)}, got {sorted(value) or 'none'}"
    if kind in ("minProperties", "maxProperties"):
        size = "at least" if kind == "minProperties" else "at most"
        return f"{where}: needs {size} {error.validator_value} keys"
    if kind == "pattern":
        return f"{where}: {json.dumps(value)} must match {error.validator_value} (letters, digits, _ and -)"
    return f"{where}: {error.message}"


def _branch_errors(
    error: jsonschema.ValidationError, validator: jsonschema.protocols.Validator
) -> list[jsonschema.ValidationError]:
    """The errors of the ``oneOf`` branch the instance's ``kind`` selects (a data set's kind), with
    paths relative to the whole config; a message on ``kind`` itself when no branch matches it."""
    branches = error.validator_value
    value = error.instance
    kinds = [b.get("properties", {}).get("kind", {}).get("const") for b in branches]
    if not isinstance(value, Mapping) or value.get("kind") not in kinds:
        kind = value.get("kind") if isinstance(value, Mapping) else value
        return [
            jsonschema.ValidationError(
                "",
                validator="enum",
                validator_value=kinds,
                instance=kind,
                path=[*error.absolute_path, "kind"],
            )
        ]
    branch = branches[kinds.index(value["kind"])]
    found = sorted(validator.evolve(schema=branch).iter_errors(value), key=lambda e: list(map(str, e.path)))
    for e in found:
        e.path.extendleft(reversed(error.absolute_path))
    return found


def schema_errors(config: Mapping, schema: Mapping) -> list[jsonschema.ValidationError]:
    """Schema errors, ``oneOf`` errors replaced by those of the branch the data's kind selects."""
    validator = jsonschema.Draft202012Validator(schema)
    out: list[jsonschema.ValidationError] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        out += _branch_errors(error, validator) if error.validator == "oneOf" else [error]
    return out


def convert_yaml11_numbers(config: dict, schema: Mapping, limit: int = 1000) -> None:
    """Replace YAML 1.1 number strings (``lr: 3e-4``) by numbers where the schema wants a number."""
    for _ in range(limit):
        for error in schema_errors(config, schema):
            number = _number_for(error.instance, error.schema) if error.validator == "type" else None
            if number is not None:
                _set(config, list(error.absolute_path), number)
                break
        else:
            return


#: settings keys the workflow sets itself (from the config's ``seed`` and the data set's name)
WORKFLOW_KEYS = {"seed": "the config's top-level seed", "dataset": "the data set's name"}


class SettingsBlock(NamedTuple):
    """A settings block of the config: its key path, values, the stage's dataclass and the stage's
    name, and the keys the workflow sets itself (not allowed in the block)."""

    where: str
    values: Mapping
    cls: type
    stage: str
    reserved: tuple[str, ...] = ()


#: shower geometries with per-layer binnings (dataset 1)
PER_LAYER_GEOMETRIES = ("1-photons", "1-pions")


def _embedded_values(entry: Mapping) -> Mapping:
    """An embedded source's settings over the defaults of its dataset (GFlash: dataset 1 has its own)."""
    values = entry["source"]["embedded"].get("settings", {})
    if entry["kind"] == "showers":
        return {**DATASET_DEFAULTS.get(str(entry["geometry"]), {}), **values}
    return values


def settings_blocks(config: Mapping) -> list[SettingsBlock]:
    """Every settings block of a schema-valid ``config`` with the dataclass that defines it."""
    generators = {"showers": (GFlashSettings, "generate-showers"), "jets": (JetGenSettings, "generate-jets")}
    blocks = [
        SettingsBlock(f"datasets.{name}.source.embedded.settings", _embedded_values(entry),
                      *generators[entry["kind"]])
        for name, entry in config["datasets"].items()
        if "embedded" in entry["source"]
    ]  # fmt: skip
    fit = {key: value for key, value in config["preprocessing"].items() if key != "split"}
    blocks.append(SettingsBlock("preprocessing", fit, FitSettings, "fit-transforms"))
    blocks += [
        SettingsBlock(f"models.{name}.multiplicity", model.get("multiplicity", {}), MultiplicitySettings,
                      "train-multiplicity", ("seed",))
        for name, model in config["models"].items()
    ]  # fmt: skip
    evaluation, report = config.get("evaluation", {}), config.get("report", {})
    export = config.get("export", {}).get("settings", {})
    return blocks + [
        SettingsBlock("sampling.settings", config["sampling"].get("settings", {}), SampleSettings, "sample"),
        SettingsBlock("evaluation.showers", evaluation.get("showers", {}), EvaluateShowersSettings,
                      "evaluate-showers", ("seed",)),
        SettingsBlock("evaluation.jets", evaluation.get("jets", {}), EvaluateJetsSettings, "evaluate-jets",
                      ("seed", "dataset")),
        SettingsBlock("report.settings", report.get("settings", {}), ReportSettings, "report"),
        SettingsBlock("export.settings", export, ExportSettings, "export"),
    ]  # fmt: skip


def settings_errors(config: Mapping) -> list[str]:
    """One line per settings block of a schema-valid ``config`` that its stage's dataclass rejects:
    an unknown key ("did you mean ..."), a key the workflow sets, a wrong type or a bad value."""
    errors = [
        f"datasets.{name}.source.embedded: GFlash makes electromagnetic showers (datasets "
        f"{', '.join(GFLASH_DATASETS)}); dataset {entry['geometry']} needs `source: files`"
        for name, entry in config["datasets"].items()
        if entry["kind"] == "showers"
        and "embedded" in entry["source"]
        and entry["geometry"] not in GFLASH_DATASETS
    ]
    for block in settings_blocks(config):
        own = sorted(set(block.values) & set(block.reserved))
        if own:
            errors.append(
                f"{block.where}: {own[0]} is set by the workflow ({WORKFLOW_KEYS[own[0]]}), not here"
            )
            continue
        try:
            block.cls(**settings_object(block.values, block.cls, block.stage))
        except (TypeError, ValueError) as err:
            errors.append(f"{block.where}: {err}")
    return errors


def data_set_errors(config: Mapping) -> list[str]:
    """One line per data set of a schema-valid ``config`` whose jet types or files do not fit: an unknown
    or repeated type, or a list of files that is not one file per type of a jet data set."""
    errors = []
    for name, entry in config["datasets"].items():
        where = f"datasets.{name}"
        types: tuple[str, ...] = ()
        if entry["kind"] == "jets":
            try:
                types = parse_jet_types(entry["jet_type"], f"{where}.jet_type")
            except ValueError as err:
                errors.append(str(err))
                continue
        for role, files in entry["source"].get("files", {}).items():
            if isinstance(files, str):
                continue
            if not all(isinstance(f, str) for f in files):
                errors.append(f"{where}.source.files.{role}: a list of files must hold file paths only")
            elif entry["kind"] != "jets" or len(types) < 2 or len(files) != len(types):
                errors.append(
                    f"{where}.source.files.{role}: a list of files is one JetNet file per jet type of a jet "
                    f"data set, in the order of jet_type; got {len(files)} files for jet_type "
                    f"{entry.get('jet_type', '(none: showers)')!s} (or one file with JetNet's type column)"
                )
        if entry["kind"] == "jets" and "files" in entry["source"]:
            kinds = {isinstance(f, str) for f in entry["source"]["files"].values()}
            if len(kinds) > 1:
                errors.append(
                    f"{where}.source.files: give train and reference both as one file or both per type"
                )
    return errors


def load_schema(path: str | Path) -> dict:
    """The config schema (YAML)."""
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def check_config(
    config: dict, schema_path: str | Path, layers: Iterable[Mapping] = (), files: str = ""
) -> None:
    """Check ``config`` in place as the module docstring says; ValueError with one line per problem
    (the first of them), prefixed with ``files`` (the config files it came from), otherwise."""
    schema = load_schema(schema_path)
    replace_sources(config, layers)
    convert_yaml11_numbers(config, schema)
    errors = [describe_error(error) for error in schema_errors(config, schema)]
    errors = errors or data_set_errors(config) or settings_errors(config)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValueError(f"{files or 'config'}: {errors[0]}{more}")


def config_files(default: str | Path, overrides: Sequence[str | Path]) -> str:
    """The config files of a run as a message prefix: the workflow's own, then ``--configfile`` ones."""
    return ", ".join(str(f) for f in [default, *overrides])
