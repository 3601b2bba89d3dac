"""The rendered report opens in headless Chromium with every embedded image decoded.

Chromium comes from the Debian package ``chromium``; when it is missing the session fixture installs
it with apt-get (root only, with a time limit) and the test skips only if that is impossible.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipelines.report import html as report_html

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
)
#: appended to a copy of the report (the report itself carries no scripts): after window load, write
#: how many images there are and how many decoded to a non-zero natural width into the DOM, and whether
#: the metrics table fits the window width (no horizontal scrolling), which section comes first and
#: where the verdict sentence sits (pixels from the top of the window).
IMAGE_CHECK = """<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) { return img.complete && img.naturalWidth > 0; });
  var out = document.createElement("pre");
  out.id = "image-check";
  var table = document.getElementById("metrics-showers");
  var fits = table && table.getBoundingClientRect().right <= document.documentElement.clientWidth;
  var first = document.querySelector("main section");
  var verdict = document.querySelector("#verdict .verdict .sentence");
  var top = verdict ? Math.round(verdict.getBoundingClientRect().top) : -1;
  out.textContent = "IMAGES " + images.length + " LOADED " + loaded.length + " TABLE_FITS " + fits +
    " FIRST " + (first ? first.id : "none") + " VERDICT_TOP " + top + " END";
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the chromium binary, installed with apt-get when missing (skip only if that fails)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and installing it needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for command in (
            ["apt-get", "update"],
            [
                "apt-get",
                "-o",
                "DPkg::Lock::Timeout=300",
                "install",
                "-y",
                "--no-install-recommends",
                "chromium",
            ],
        ):
            subprocess.run(command, check=True, capture_output=True, timeout=900, env=env)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        pytest.skip(f"chromium could not be installed: {err}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get ran but no chromium binary appeared")
    return found


def _write_run(directory: Path) -> list[str]:
    """A small shower run (evaluation contract format) plus a training curve; returns CLI arguments."""
    rng = np.random.default_rng(3)
    edges = np.linspace(0.5, 1.5, 21)
    arrays = {
        "etot__edges": edges,
        "etot__reference": np.histogram(rng.normal(1.0, 0.1, 5000), edges)[0].astype(float),
        "etot__generated": np.histogram(rng.normal(1.02, 0.1, 5000), edges)[0].astype(float),
        "mean_shower__reference": rng.uniform(0.1, 1.0, (45, 16, 9)),
        "mean_shower__generated": rng.uniform(0.1, 1.0, (45, 16, 9)),
        "nhits_vs_einc__edges": np.linspace(3.0, 6.0, 7),  # log10(E_inc / MeV)
        "nhits_vs_einc__reference": np.linspace(100.0, 600.0, 6),
        "nhits_vs_einc__generated": np.linspace(110.0, 580.0, 6),
    }
    np.savez(directory / "h.npz", **arrays)
    metrics = {
        "kind": "showers",
        "dataset": "2",
        "settings": {"n_showers": 5000},
        "rows": {
            "model": {"cls_high_auc": {"value": 0.93, "error": 0.01}, "fpd": {"value": 0.5, "error": 0.01}},
            "real_vs_real": {
                "cls_high_auc": {"value": 0.502, "error": 0.004},
                "fpd": {"value": 0.01, "error": 0.001},
            },
        },
        "histograms": [
            {
                "name": "etot",
                "xlabel": "E_tot / E_inc",
                "logx": False,
                "logy": False,
                "group": "energy",
                "separation_power": 0.01,
            },
        ],
    }
    (directory / "m.json").write_text(json.dumps(metrics))
    rows = ["step,loss_critic,loss_generator"] + [f"{i},{-1 + i / 100},{1 - i / 100}" for i in range(100)]
    (directory / "curve.csv").write_text("\n".join(rows) + "\n")
    return [
        "--metrics",
        str(directory / "m.json"),
        "--histograms",
        str(directory / "h.npz"),
        "--labels",
        "MDMA",
        "--training-curve",
        str(directory / "curve.csv"),
        "--real-data",
    ]


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    profile.mkdir()
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_report_loads_with_all_images_in_chromium(chromium, tmp_path):
    out, plots_dir = tmp_path / "report.html", tmp_path / "plots"
    settings = json.dumps({"dpi": 60})
    assert (
        report_html.main(
            [*_write_run(tmp_path), "--settings", settings, "--out", str(out), "--plots-dir", str(plots_dir)]
        )
        == 0
    )
    n_plots = len(list(plots_dir.glob("*.png")))
    assert n_plots == 6  # etot + layer profile + radial profile + layer images + hits vs E + training curve

    page = out.read_text(encoding="utf-8")
    assert "</body>" in page
    checked = tmp_path / "report_checked.html"
    checked.write_text(page.replace("</body>", IMAGE_CHECK + "</body>"), encoding="utf-8")
    result = _chromium(
        chromium,
        tmp_path / "profile-dom",
        "--window-size=1280,2400",
        "--virtual-time-budget=10000",
        "--dump-dom",
        checked.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(
        r"IMAGES (\d+) LOADED (\d+) TABLE_FITS (\w+) FIRST (\S+) VERDICT_TOP (-?\d+) END", result.stdout
    )
    assert match, f"the load check did not run; stdout tail: {result.stdout[-500:]}"
    assert int(match.group(1)) == n_plots
    assert int(match.group(2)) == n_plots
    assert match.group(3) == "true"
    # the verdict is the first section, its sentence within the first screenful of a 1280 x 800 window
    assert match.group(4) == "verdict"
    assert 0 <= int(match.group(5)) < 800
    assert "The model is clearly distinguishable from the reference" in result.stdout
    assert "published numbers (arXiv:2410.21611)" in result.stdout

    screenshot = tmp_path / "report.png"
    result = _chromium(
        chromium,
        tmp_path / "profile-shot",
        "--window-size=1280,2400",
        "--hide-scrollbars",
        f"--screenshot={screenshot}",
        out.as_uri(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
    keep = os.environ.get("REPORT_SCREENSHOT_DIR")  # set to look at the page by eye
    if keep:
        shutil.copy(screenshot, Path(keep) / "report_screenshot.png")
