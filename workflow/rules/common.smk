# Shared helpers: config lookups, input paths of real or embedded data, code hashes.
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)
from pipelines import codehash  # noqa: E402
from pipelines.config_check import PER_LAYER_GEOMETRIES  # noqa: E402
from pipelines.jet_types import parse_jet_types  # noqa: E402
from pipelines.export_settings import EXPORTABLE  # noqa: E402
from pipelines.models.settings import family_spec  # noqa: E402 (no torch: a fast start)
from pipelines.training.settings import split_settings  # noqa: E402

# Shell commands quote every interpolated value ({x:q}): config strings and file paths never reach
# the shell as code, whatever quotes, spaces, $(...), backticks or newlines they hold. They run
# `python -m pipelines`: the interpreter running this workflow comes first on PATH (jobs inherit it),
# unless --use-conda activates the rules' environment (workflow/envs/pipelines.yaml).
envvars:
    "PATH",


_BIN = str(Path(sys.executable).parent)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = os.pathsep.join([_BIN, os.environ.get("PATH", "")])
DATASETS = config["datasets"]
MODELS = config["models"]
NAME = "[A-Za-z0-9_-]+"


wildcard_constraints:
    dataset=NAME,
    model=NAME,
    role="train|reference",


def code_hash(*modules, **kwargs):
    """Hash of the workflow's own copy of the pipelines code that ``modules`` depend on."""
    return codehash.code_hash(*modules, root=Path(workflow.basedir) / "pipelines", **kwargs)


def dataset(wc):
    return DATASETS[wc.dataset]


def is_embedded(name):
    return "embedded" in DATASETS[name]["source"]


def is_merged(name):
    """A jet data set given as one file per jet type (merged into one file with the type column)."""
    return not is_embedded(name) and isinstance(DATASETS[name]["source"]["files"]["train"], list)


def raw_file(name, role):
    """Path of a data set's training or reference file: generated or merged, or the user's own."""
    if is_embedded(name) or is_merged(name):
        return f"results/{name}/data/{role}.h5"
    return DATASETS[name]["source"]["files"][role]


def jet_types_arg(wc):
    """A jet data set's ``jet_type`` as the stages take it: one letter, or letters joined by commas."""
    value = dataset(wc)["jet_type"]
    return value if isinstance(value, str) else ",".join(value)


def as_json(value):
    """Compact, sorted JSON: a stable params value, passed to --settings quoted ({params.settings:q})."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def role_seed(wc):
    """Independent seeds for the training and reference samples of one data set."""
    return config["seed"] + (0 if wc.role == "train" else 1)


def run_dirs():
    return [f"results/{r['dataset']}/{r['model']}" for r in config["runs"]]


def dataset_models(name):
    """The models trained on data set ``name``, in the order of ``runs``."""
    return [r["model"] for r in config["runs"] if r["dataset"] == name]


def final_outputs():
    """Every run's report and, per data set with a run, the comparison page of its runs."""
    datasets = dict.fromkeys(r["dataset"] for r in config["runs"])
    return [f"{d}/report.html" for d in run_dirs()] + [f"results/{name}/comparison.html" for name in datasets]


def export_input(wc):
    """The run's export.json when the config exports (``export: enabled``) and its family can be exported."""
    if config["export"]["enabled"] and MODELS[wc.model]["family"] in EXPORTABLE:
        return {"export": f"results/{wc.dataset}/{wc.model}/export/export.json"}
    return {}


def multiplicity_input(wc):
    """The multiplicity model, for families that draw n from it (not the factorised showers)."""
    if family_spec(MODELS[wc.model]["family"]).needs_multiplicity:
        return {"multiplicity": f"results/{wc.dataset}/{wc.model}/multiplicity.json"}
    return {}


for _run in config["runs"]:
    if _run["dataset"] not in DATASETS or _run["model"] not in MODELS:
        raise ValueError(
            f"config.yaml: run {_run} names an unknown data set or model "
            f"(data sets: {sorted(DATASETS)}, models: {sorted(MODELS)})"
        )


def model_settings(name):
    """The flat training settings of model ``name``: seed, architecture and training keys."""
    m = MODELS[name]
    return {"seed": config["seed"], **m.get("architecture", {}), **m.get("training", {})}


def train_gpus(name):
    """GPUs (data-parallel processes) of model ``name``'s training: its training setting gpus (default 1)."""
    return int(MODELS[name].get("training", {}).get("gpus", 1))


def train_launcher(name):
    """The command that starts ``pipelines`` for training: one process, or torchrun with one per GPU."""
    n = train_gpus(name)
    if n == 1:
        return "python -m pipelines"
    return f"python -m torch.distributed.run --standalone --nproc-per-node {n} -m pipelines"


for _name, _model in MODELS.items():
    try:
        _family_settings = split_settings(_model["family"], model_settings(_name))[1]
    except ValueError as err:
        raise ValueError(f"config.yaml: model {_name!r}: {err}") from None
    for _run in config["runs"]:
        _kind = DATASETS[_run["dataset"]]["kind"] if _run["model"] == _name else None
        if _kind is not None and _kind not in family_spec(_model["family"]).kinds:
            raise ValueError(
                f"config.yaml: run {_run}: family {_model['family']!r} does not model {_kind}"
            )
        _geometry = DATASETS[_run["dataset"]]["geometry"] if _kind == "showers" else None
        if _geometry in PER_LAYER_GEOMETRIES and not family_spec(_model["family"]).per_layer_geometries:
            raise ValueError(
                f"config.yaml: run {_run}: family {_model['family']!r} models the regular grids of datasets "
                f"2 and 3, not the per-layer binning of dataset {_geometry}; use factorised, flow-matching "
                "or mdma-gan"
            )
        if _geometry in PER_LAYER_GEOMETRIES:
            if _model["family"] == "factorised" and _family_settings.placement != "pareto":
                raise ValueError(
                    f"config.yaml: run {_run}: factorised placement {_family_settings.placement!r} "
                    "resolves collisions on a regular grid; the per-layer binning of dataset "
                    f"{_geometry} needs placement 'pareto'"
                )
            if config["export"]["enabled"] and _model["family"] in EXPORTABLE:
                raise ValueError(
                    f"config.yaml: run {_run}: the ONNX export takes the regular grids of datasets 2 and 3, "
                    f"not the per-layer binning of dataset {_geometry}; set export.enabled: false or drop "
                    "the run"
                )
        _types = parse_jet_types(DATASETS[_run["dataset"]]["jet_type"]) if _kind == "jets" else ()
        if len(_types) > 1 and not family_spec(_model["family"]).jet_type_condition:
            raise ValueError(
                f"config.yaml: run {_run}: family {_model['family']!r} models one jet type at a time, not "
                f"the jet types {list(_types)}; train one model per type or use flow-matching"
            )
if abs(sum(config["preprocessing"]["split"]) - 1.0) > 1e-9:
    raise ValueError(f"config.yaml: preprocessing.split {config['preprocessing']['split']} must sum to 1")


def plot_labels(wc):
    """`snakemake --report` labels of one plot file, named <run>-<section>-<plot>.png by the report stage
    (training curves: training-<i>-<run>.png): the run, the section and the plot."""
    run = f"{wc.dataset} / {wc.model}"
    if wc.name.startswith("training-"):
        return {"run": run, "figure": "training", "plot": "training curves"}
    parts = wc.name.split("-")
    return {"run": run, "figure": parts[-2] if len(parts) > 2 else "plot", "plot": parts[-1]}


def compare_runs(wc, what):
    """Per model trained on the data set, in the order of ``runs``: the file ``what`` of its run."""
    return [f"results/{wc.dataset}/{model}/{what}" for model in dataset_models(wc.dataset)]
