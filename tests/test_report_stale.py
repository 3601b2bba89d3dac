"""Stale reports: a report names the files it was made from (sha256) and when; a run that set out to
remake a report and failed leaves a STALE banner on the old one (pipelines.report.stale)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from pipelines.io.calochallenge import write_calochallenge
from pipelines.report import stale
from tests.conftest import random_showers
from tests.test_report import _run_report, _write_curve_and_timing, _write_shower_run
from tests.test_shell_quoting import _snakemake
from tests.workflow_runner import copy_repository

WHEN = "2026-01-31 12:00:00 UTC"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_names_every_input_with_its_sha256_and_the_utc_time(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"model bytes")
    before = datetime.now(UTC).replace(microsecond=0)
    page, _ = _run_report(tmp_path, "--model", str(model))
    made = re.search(r"Made (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", page)
    assert made is not None
    when = datetime.strptime(made.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert before <= when <= datetime.now(UTC) + timedelta(seconds=1)
    run = tmp_path / "run"
    for role, path in [
        ("model", model),
        ("metrics", run / "metrics.json"),
        ("histograms", run / "histograms.npz"),
        ("timing", run / "timing.json"),
    ]:
        sha = _sha256(path)
        row = f'data-sha256="{sha}"><td>{role}</td><td>{path}</td><td><code>{sha}</code></td></tr>'
        assert row in page, role


def test_a_report_whose_inputs_changed_since_is_marked_outdated(tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"model bytes")
    _run_report(tmp_path, "--model", str(model))
    report = tmp_path / "report.html"
    original = report.read_text()
    assert stale.changed_inputs(original) == [] and stale.mark_outdated([report]) == []
    assert report.read_text() == original
    model.write_bytes(b"retrained")  # e.g. a run with --until train
    (tmp_path / "run" / "timing.json").unlink()
    assert stale.changed_inputs(original) == [str(model), str(tmp_path / "run" / "timing.json")]
    assert stale.mark_outdated([report, tmp_path / "absent.html"]) == [report]
    text = stale.stale_text(report.read_text())
    assert text == stale.outdated_text([str(model), str(tmp_path / "run" / "timing.json")])
    assert text.startswith(f"STALE: {model}, {tmp_path / 'run' / 'timing.json'} changed after this report")
    assert stale.mark_outdated([report]) == []  # a report with a banner keeps it
    assert stale.outdated_text(list("abcde")).startswith("STALE: a, b, c and 2 more changed")


def _page(tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    path.write_text(
        "<!DOCTYPE html>\n<html><head><title>t</title></head>\n"
        "<body class='x'>\n<h1>old</h1>\n</body></html>\n"
    )
    path.chmod(0o640)
    return path


def test_banner_is_the_first_thing_in_the_body_and_replaces_an_earlier_one(tmp_path: Path) -> None:
    path = _page(tmp_path)
    original = path.read_text()
    assert stale.mark_stale(path, "first <b>")
    assert stale.mark_stale(path, stale.failed_text(WHEN))
    page = path.read_text()
    assert page.count(stale.START) == 1 and stale.stale_text(page) == stale.failed_text(WHEN)
    assert page.index("<body class='x'>\n") + len("<body class='x'>\n") == page.index(stale.START)
    assert "STALE: the run of 2026-01-31 12:00:00 UTC failed before this report was remade" in page
    assert page.replace(stale.banner(stale.failed_text(WHEN)), "") == original  # nothing else changed
    assert stale.stale_text(original) is None
    assert path.stat().st_mode & 0o777 == 0o640 and [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert "&lt;b&gt;" in stale.banner("first <b>")  # text is escaped


def test_a_failed_run_marks_only_the_reports_it_did_not_remake(tmp_path: Path) -> None:
    remade, kept, absent = tmp_path / "a" / "report.html", tmp_path / "b" / "report.html", tmp_path / "c.html"
    for path in (remade, kept):
        path.parent.mkdir()
        path.write_text("<html><body><p>old</p></body></html>")
    other = tmp_path / "other.html"  # not part of this run
    other.write_text("<html><body>other</body></html>")
    assert stale.mark_started([remade, kept, absent], WHEN) == [remade, kept]
    assert stale.stale_text(kept.read_text()) == stale.started_text(WHEN)
    remade.write_text("<html><body><p>new</p></body></html>")  # the report job succeeded
    assert stale.mark_failed([remade, kept, absent], WHEN) == [kept]
    assert stale.stale_text(kept.read_text()) == stale.failed_text(WHEN)
    assert remade.read_text() == "<html><body><p>new</p></body></html>"
    assert stale.mark_failed([kept], "2026-02-01 00:00:00 UTC") == []  # another run's banner: unchanged
    assert other.read_text() == "<html><body>other</body></html>"


def test_a_report_that_cannot_be_marked_is_a_warning_not_a_failure(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    path = _page(tmp_path)
    original = path.read_text()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    assert stale.mark_started([path], WHEN) == []
    assert f"warning: {path}: could not be marked stale" in capsys.readouterr().err
    assert path.read_text() == original


def _report_inputs(work: Path) -> None:
    """Hand-made inputs of the report of run calo / tiny-factorised of the tiny config."""
    run_dir = work / "results" / "calo" / "tiny-factorised"
    _write_shower_run(run_dir / "evaluation")
    curve, timing = _write_curve_and_timing(run_dir)
    curve.rename(run_dir / "training_curve.csv")
    timing.rename(run_dir / "timing.json")
    summary = {"family": "factorised", "steps": 10, "total_train_time_s": 3.0, "device": "cpu"}
    (run_dir / "training_summary.json").write_text(json.dumps(summary))
    (run_dir / "model.pt").write_bytes(b"hashed by the report only")
    (work / "results" / "calo" / "data").mkdir(parents=True, exist_ok=True)
    for role in ("train", "reference"):
        data_summary = {"file": f"results/calo/data/{role}.h5", "sha256": "0" * 64, "warnings": []}
        (work / "results" / "calo" / "data" / f"{role}.summary.json").write_text(json.dumps(data_summary))


@pytest.mark.slow
def test_a_failed_upstream_stage_leaves_the_old_report_marked_stale(tmp_path: Path, ds2) -> None:
    """Snakefile hooks: report made; its training data replaced by a broken file, so validate_data fails
    and the report is not remade: the old page gets the banner; with the file fixed the rerun remakes
    it without one; a run that leaves the report alone after its model changed marks it. Only
    validate_data and report may run (hand-made inputs, a few seconds each)."""
    work = copy_repository(tmp_path / "work")
    _report_inputs(work)
    report = work / "results" / "calo" / "tiny-factorised" / "report.html"
    argv = [str(report.relative_to(work)), "--cores", "1", "--configfile", "tests/config/tiny.yaml"]
    argv += ["--allowed-rules", "validate_data", "report"]
    first = _snakemake(work, *argv)
    assert first.returncode == 0, first.stdout + first.stderr
    assert stale.stale_text(report.read_text()) is None
    train = work / "results" / "calo" / "data" / "train.h5"
    train.write_text("not an HDF5 file")  # newer than its summary: validate_data reruns, and fails
    failed = _snakemake(work, *argv)
    assert failed.returncode != 0
    text = stale.stale_text(report.read_text())
    assert text is not None and re.fullmatch(stale.failed_text(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"), text)
    assert f"{report.relative_to(work)}: STALE, the run of" in failed.stderr
    assert "Made " in report.read_text()  # the old page is kept below the banner
    energies, showers = random_showers(ds2, 9, seed=9, occupancy=0.01)
    showers *= (0.9 * energies / showers.sum(axis=1))[:, None].astype(np.float32)
    write_calochallenge(train, energies, showers)
    fixed = _snakemake(work, *argv)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert stale.stale_text(report.read_text()) is None
    assert _sha256(train) in report.read_text()
    model = report.parent / "model.pt"
    model.write_bytes(b"retrained")  # the report is not among the targets of the next run
    other = _snakemake(work, "results/calo/data/train.summary.json", "--forcerun", "validate_data", *argv[1:])
    assert other.returncode == 0, other.stdout + other.stderr
    assert stale.stale_text(report.read_text()) == stale.outdated_text([str(model.relative_to(work))])
