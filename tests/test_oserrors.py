"""OS errors that stop a stage (disk full, quota, read-only or forbidden output): one line naming the
file, the space needed where known and free, and no half-written output (pipelines.io.oserrors)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipelines.cli import main as cli
from pipelines.io.atomic import atomic_path, atomic_torch_save, atomic_write_bytes
from pipelines.io.calochallenge import write_calochallenge
from pipelines.io.oserrors import describe_os_error, format_bytes
from tests.conftest import random_showers

#: The text h5py gives for a full disk: errno only inside the message, the file as ``name = '...'``.
H5PY_ENOSPC = (
    "Unable to synchronously write data (file write failed: time = Thu Jan  1 00:00:00 2026, filename = "
    "'{name}', file descriptor = 5, errno = 28, error message = 'No space left on device', buf = 0x1, "
    "total write size = 4096, bytes this sub-write = 4096, bytes actually written = 18446744073709551615)"
)


def _validate_argv(tmp_path: Path, ds2, out: Path) -> list[str]:
    energies, showers = random_showers(ds2, 9, seed=9, occupancy=0.01)
    showers *= (0.9 * energies / showers.sum(axis=1))[:, None].astype(np.float32)
    write_calochallenge(tmp_path / "in.h5", energies, showers)
    return ["validate", "--kind", "showers", "--dataset", "2", "--input", str(tmp_path / "in.h5")] + [
        "--out",
        str(out),
    ]


def _full_disk(error_number: int = errno.ENOSPC):
    def write(self, *args, **kwargs):
        raise OSError(error_number, os.strerror(error_number), str(self))

    return write


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1536, 5 * 2**30)] == ["0 B", "1023 B", "1.5 KiB", "5 GiB"]


def test_json_stage_on_a_full_disk_names_the_output_and_space(tmp_path, ds2, capsys, monkeypatch) -> None:
    out = tmp_path / "out" / "train.summary.json"
    argv = _validate_argv(tmp_path, ds2, out)
    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_text", _full_disk())
        assert cli(argv) == 1
    err = capsys.readouterr().err.strip()
    free = format_bytes(shutil.disk_usage(tmp_path).free).split()[1]
    assert err.startswith(f"error: {out}: no space left on device (ENOSPC);"), err
    assert ".part" not in err and f"free of {format_bytes(shutil.disk_usage(tmp_path).total)}" in err
    assert free in err and "nothing was left half-written" in err and len(err.splitlines()) == 1
    assert list(out.parent.iterdir()) == []
    assert cli(argv) == 0  # space freed: the same call succeeds
    assert json.loads(out.read_text())["showers"] == 9


def test_hdf5_stage_on_a_full_disk_with_h5pys_message(tmp_path, capsys, monkeypatch) -> None:
    out = tmp_path / "data" / "train.h5"
    argv = ["generate-showers", "--n-showers", "2", "--seed", "1", "--no-progress", "--out", str(out)]
    original = h5py.Group.create_dataset

    def full(self, name, *args, **kwargs):
        if name == "showers":
            raise OSError(H5PY_ENOSPC.format(name=self.file.filename))
        return original(self, name, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(h5py.Group, "create_dataset", full)
        assert cli(argv) == 1
    err = capsys.readouterr().err
    assert f"error: {out}: no space left on device (ENOSPC);" in err
    assert "free of" in err and "nothing was left half-written" in err
    assert list(out.parent.iterdir()) == []
    assert cli(argv) == 0 and h5py.is_hdf5(out)


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (errno.EDQUOT, "disk quota exceeded (EDQUOT)"),
        (errno.EROFS, "read-only file system (EROFS)"),
        (errno.EACCES, "permission denied (EACCES)"),
    ],
)
def test_quota_read_only_and_forbidden_outputs(tmp_path, ds2, capsys, monkeypatch, number, text) -> None:
    out = tmp_path / "out" / "s.json"
    argv = _validate_argv(tmp_path, ds2, out)
    with monkeypatch.context() as patch:
        # the temporary file cannot even be created (a read-only or forbidden folder, a full quota)
        patch.setattr("tempfile.mkstemp", lambda **kw: (_ for _ in ()).throw(OSError(number, "x", kw["dir"])))
        assert cli(argv) == 1
    err = capsys.readouterr().err
    assert text in err and str(out.parent) in err and f"while writing {out}" in err
    assert ("free of" in err) == (number == errno.EDQUOT)
    assert not out.exists()
    assert cli(argv) == 0 and out.exists()


def test_npz_and_model_writers_remove_the_temporary_file_and_say_what_was_needed(
    tmp_path, monkeypatch
) -> None:
    torch = pytest.importorskip("torch")
    model = tmp_path / "model.pt"
    histograms = tmp_path / "histograms.npz"
    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_bytes", _full_disk())
        with pytest.raises(OSError) as saved:
            atomic_torch_save({"w": torch.zeros(1000)}, model)
        import io

        buffer = io.BytesIO()
        np.savez(buffer, edges=np.arange(10.0))
        with pytest.raises(OSError) as written:
            atomic_write_bytes(histograms, buffer.getvalue())
    assert list(tmp_path.iterdir()) == []
    assert saved.value.output_path == model and saved.value.bytes_needed > 4000
    text = describe_os_error(saved.value)
    assert text.startswith(f"{model}: no space left on device (ENOSPC); it needed ")
    assert format_bytes(saved.value.bytes_needed) in text
    assert written.value.bytes_needed == len(buffer.getvalue())
    assert f"it needed {format_bytes(len(buffer.getvalue()))}" in describe_os_error(written.value)


def test_innermost_output_is_named_and_other_errors_pass_unchanged(tmp_path) -> None:
    outer, inner = tmp_path / "a.h5", tmp_path / "b.json"
    with pytest.raises(OSError) as caught, atomic_path(outer), atomic_path(inner) as tmp:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert caught.value.output_path == inner
    assert describe_os_error(FileNotFoundError(errno.ENOENT, "No such file or directory", "in.h5")) == (
        "in.h5: No such file or directory (ENOENT)"
    )
