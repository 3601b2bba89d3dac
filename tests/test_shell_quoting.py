"""Config strings and file paths reach the stages intact and never run as shell code.

Hostile and awkward values (quotes, spaces, ``$(...)``, backticks, newlines) go into a report
title and label, the embedded generator's settings and a user data file's path. A dry run with
``--printshellcmds`` plans every rule; each printed command is then executed by bash with the
``python -m pipelines`` prefix replaced by a script that records its argv, so bash itself decides
what each stage would receive. One cheap real run (validation of the awkward file, the report from
hand-made inputs) checks the values end to end.
"""

from __future__ import annotations

import html.parser
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from pipelines.io.jetnet import write_jetnet
from tests.test_jetnet_io import valid_jets
from tests.test_report import _write_curve_and_timing, _write_shower_run
from tests.workflow_runner import REPO, copy_repository

TINY = REPO / "tests" / "config" / "tiny.yaml"
#: every shell metacharacter that broke or ran a command before quoting; the marker files are
#: created (relative to the working directory) only if a command substitution runs
HOSTILE = 'Anna\'s $(touch pwned-a) `touch pwned-b` "q" ; touch pwned-c & x | y > z\nline two\\'
#: a directory name in the same spirit (no "/": it is one path component)
HOSTILE_DIR = "my data 'q'$(touch pwned-d)`touch pwned-e`\n\"x\" ;&|<>*?"
PY_PREFIX = "python -m pipelines "
#: stands in for ``python -m pipelines``: appends its argv (stage and options) to the file argv[1]
ARGV_DUMPER = (
    "import json, sys\nwith open(sys.argv[1], 'a') as f:\n    print(json.dumps(sys.argv[2:]), file=f)\n"
)


def _hostile_config(data_dir: Path) -> dict:
    """The tiny config with a user-file jet data set in ``data_dir`` and hostile strings in the report
    settings and in the Pythia settings of a second, embedded jet data set."""
    config = yaml.safe_load(TINY.read_text())
    config["datasets"]["jets"]["source"] = {
        "files": {"train": str(data_dir / "train.h5"), "reference": str(data_dir / "reference.h5")}
    }
    config["datasets"]["jets-gen"] = {
        "kind": "jets",
        "geometry": 30,
        "jet_type": "t",
        "source": {"embedded": {"n_train": 60, "n_reference": 60, "settings": {"pythia_lines": [HOSTILE]}}},
    }
    config["runs"].append({"dataset": "jets-gen", "model": "tiny"})
    config["report"]["settings"].update(title=HOSTILE, reference_label=HOSTILE[::-1])
    return config


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args], cwd=work, capture_output=True, text=True, timeout=300
    )


def _assert_nothing_ran(*dirs: Path) -> None:
    for d in dirs:
        assert not list(d.rglob("pwned*")), f"a command substitution ran in {d}"


def test_every_planned_command_passes_values_intact(tmp_path: Path) -> None:
    work = copy_repository(tmp_path / "work")
    data_dir = tmp_path / HOSTILE_DIR
    data_dir.mkdir()
    for role in ("train", "reference"):
        (data_dir / f"{role}.h5").write_bytes(b"")  # a dry run only needs the files to exist
    config = _hostile_config(data_dir)
    (work / "hostile.yaml").write_text(yaml.safe_dump(config))
    res = _snakemake(work, "-n", "-p", "--cores", "1", "--configfile", "hostile.yaml")
    assert res.returncode == 0, res.stdout + res.stderr
    commands = re.findall(r"^Shell command: (.*?2> \S+\.log)$", res.stdout, re.MULTILINE | re.DOTALL)
    # every job of the three runs, each with its metrics table and its data set's comparison page
    assert len(commands) == 36, res.stdout  # (12 + 11 + 13)

    dumper, record = tmp_path / "argv_dumper.py", tmp_path / "argv.jsonl"
    dumper.write_text(ARGV_DUMPER)
    prefix = f"{shlex.quote(sys.executable)} {shlex.quote(str(dumper))} {shlex.quote(str(record))} "
    for command in commands:
        assert command.count(PY_PREFIX) == 1, command
        log = Path(work / shlex.split(command.rsplit("2> ", 1)[1])[0])
        log.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["bash", "-c", command.replace(PY_PREFIX, prefix)], cwd=work, timeout=60)
        assert done.returncode == 0, command
    _assert_nothing_ran(work, tmp_path)

    argvs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(argvs) == len(commands)
    seen: dict[str, list] = {}
    for argv in argvs:
        stage, options = argv[0], argv[1:]
        for i, arg in enumerate(options):
            if arg == "--settings":
                seen.setdefault(f"{stage} settings", []).append(json.loads(options[i + 1]))
            elif arg.startswith(("--input=", "--reference=")):
                seen.setdefault(f"{stage} {arg.split('=')[0]}", []).append(arg.split("=", 1)[1])
            elif arg == "--labels":
                seen.setdefault("labels", []).append(options[i + 1])
    assert {s["title"] for s in seen["report settings"]} == {HOSTILE}
    assert {s["reference_label"] for s in seen["report settings"]} == {HOSTILE[::-1]}
    assert [s["reference_label"] for s in seen["compare settings"]] == [HOSTILE[::-1]] * 3
    assert not any("title" in s for s in seen["compare settings"])  # the pages make their own titles
    assert seen["generate-jets settings"] == [{"pythia_lines": [HOSTILE]}] * 2
    assert sorted(seen["labels"]) == ["calo / tiny-factorised", "jets / tiny", "jets-gen / tiny"]
    user_files = {str(data_dir / "train.h5"), str(data_dir / "reference.h5")}
    assert set(seen["validate --input"]) >= user_files
    assert seen["convert --input"].count(str(data_dir / "train.h5")) == 1
    for stage in ("sample", "evaluate-jets"):
        assert str(data_dir / "reference.h5") in seen[f"{stage} --reference"]


class _Heading(html.parser.HTMLParser):
    """The text of the page's first <h1>."""

    def __init__(self) -> None:
        super().__init__()
        self.inside, self.text = False, None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "h1" and self.text is None:
            self.inside, self.text = True, ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1":
            self.inside = False

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data


def test_hostile_title_and_path_arrive_intact_in_a_real_run(tmp_path: Path) -> None:
    """validate_data on a file in the awkward folder, the report with the hostile title (hand-made
    report inputs, no upstream rule allowed): both run, nothing else runs, the values arrive."""
    work = copy_repository(tmp_path / "work")
    data_dir = tmp_path / HOSTILE_DIR
    data_dir.mkdir()
    pf, jf = valid_jets()
    jf[1, 3] = 4  # the full jet of 4 slots is no longer full in 30 slots
    for role in ("train", "reference"):
        write_jetnet(data_dir / f"{role}.h5", np.pad(pf, ((0, 0), (0, 26), (0, 0))), jf)
    run_dir = work / "results" / "calo" / "tiny-factorised"
    _write_shower_run(run_dir / "evaluation")
    curve, timing = _write_curve_and_timing(run_dir)
    curve.rename(run_dir / "training_curve.csv")
    timing.rename(run_dir / "timing.json")
    summary = {"family": "factorised", "steps": 10, "total_train_time_s": 3.0, "device": "cpu"}
    (run_dir / "training_summary.json").write_text(json.dumps(summary))
    (run_dir / "model.pt").write_bytes(b"hashed by the report only")
    for role in ("train", "reference"):  # the calo data summaries the report lists (no warnings)
        data_summary = {"file": f"results/calo/data/{role}.h5", "sha256": "0" * 64, "warnings": []}
        (work / "results" / "calo" / "data").mkdir(parents=True, exist_ok=True)
        (work / "results" / "calo" / "data" / f"{role}.summary.json").write_text(json.dumps(data_summary))
    (work / "hostile.yaml").write_text(yaml.safe_dump(_hostile_config(data_dir)))
    targets = ["results/jets/data/train.summary.json", "results/calo/tiny-factorised/report.html"]
    only = ("--allowed-rules", "validate_data", "report")
    res = _snakemake(work, *targets, "--cores", "1", "--configfile", "hostile.yaml", *only)
    assert res.returncode == 0, res.stdout + res.stderr
    _assert_nothing_ran(work, tmp_path)
    summary = json.loads((work / targets[0]).read_text())
    assert summary["file"] == str(data_dir / "train.h5") and summary["jets"] == 3
    heading = _Heading()
    heading.feed((work / targets[1]).read_text(encoding="utf-8"))
    assert heading.text == HOSTILE
