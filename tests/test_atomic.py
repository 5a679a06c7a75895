"""Outputs are written whole or not at all, and get the permissions any new file would get."""

import os
import stat

import pytest

from core.atomic import atomic_output


def test_a_written_output_has_the_usual_permissions_not_the_temporary_files(tmp_path):
    target = tmp_path / "roads.gpkg"
    with atomic_output(target) as tmp:
        tmp.write_bytes(b"data")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask  # mkstemp alone leaves 0600
    assert target.read_bytes() == b"data" and list(tmp_path.iterdir()) == [target]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "roads.gpkg"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("cancelled")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]
