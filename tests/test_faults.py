"""Faults as they happen to real runs: SIGTERM and kill -9 in the middle, two runs into one folder, a model that
diverged. Real processes, real files; nothing may be left running or half-written."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from core.atomic import folder_lock, remove_stale_scratch
from core.errors import OutputError
from core.model import ModelConfig, build_model
from core.model.checkpoint import CheckpointError, ModelInfo, load_model, save_model


def _start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def big_scene(tmp_path_factory) -> Path:
    """A 1536 px UTM GeoTIFF of the generated suburb: long enough to run for seconds."""
    from core.inputs.sample import make_suburb

    path = tmp_path_factory.mktemp("scene") / "suburb.tif"
    image = make_suburb(1536, seed=2).image.transpose(2, 0, 1)
    with rasterio.open(path, "w", driver="GTiff", width=1536, height=1536, count=3, dtype="uint8",
                       crs="EPSG:32619", transform=from_origin(330000, 4690000, 1, 1)) as ds:
        ds.write(image)
    return path


def _wait_for(predicate, timeout_s: float = 120) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_sigterm_during_extract_cleans_up_like_ctrl_c(big_scene, random_model_file, tmp_path):
    out = tmp_path / "out"
    process = _start("extract", big_scene, "--model", random_model_file, "--out", out, "--tta-scales", "1",
                     "--tile", "256", "--overlap", "32", "--no-vectorize", "--precision", "fp32")
    assert _wait_for(lambda: any(out.glob(".road-extractor-*")) or process.poll() is not None)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143 and "terminated; no output was written" in stderr, stderr
    assert not out.exists()  # no scratch folder, no outputs, not even the folder it made


def test_a_later_run_removes_scratch_folders_of_runs_that_were_killed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".road-extractor-{dead.stdout.strip()}-abc"
    live = tmp_path / f".road-extractor-{os.getpid()}-def"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "processing.tif").write_bytes(b"half")
    remove_stale_scratch(tmp_path, ".road-extractor-")
    assert not stale.exists() and live.exists()


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    with folder_lock(tmp_path, lambda pid: OutputError(f"busy {pid}")):
        code = ("import sys; from pathlib import Path; from core.atomic import folder_lock\n"
                "try:\n    with folder_lock(Path(sys.argv[1]), lambda pid: RuntimeError(pid)): print('got it')\n"
                "except RuntimeError as e: print('refused', e)")
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert other.stdout.strip() == f"refused {os.getpid()}", other.stderr
    assert list(tmp_path.iterdir()) == []  # the lock file goes with the lock
    again = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert again.stdout.strip() == "got it"


@pytest.fixture(scope="module")
def grid_mask(tmp_path_factory) -> Path:
    """Large enough (100 MP: several seconds of work for each worker) that the vectorize workers are caught
    mid-run on any CPU."""
    mask = np.zeros((10000, 10000), np.uint8)
    mask[::40, :] = 1
    mask[:, ::40] = 1
    raster = tmp_path_factory.mktemp("grid") / "grid_mask.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=10000, height=10000, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32619", transform=from_origin(330000, 4690000, 1, 1)) as ds:
        ds.write(mask, 1)
        ds.update_tags(1, ROLE="1 road, 0 background, 255 no data")
    return raster


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split()[2] == "Z"  # a zombie, reaped by init: no memory, not running


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_a_vectorize_stopped_midway_leaves_no_worker_process_and_no_file(grid_mask, tmp_path, stop):
    process = _start("vectorize", grid_mask, "--out", tmp_path / "roads.gpkg", env={**os.environ,
                                                                                   "ROAD_EXTRACTOR_WORKERS": "2"})

    def children() -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found]

    assert _wait_for(lambda: len(children()) >= 2 or process.poll() is not None)
    workers = children()
    assert process.poll() is None, "vectorize finished before it could be stopped; make the raster larger"
    process.send_signal(signal.SIGKILL if stop == "kill -9" else signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    if stop == "SIGTERM":
        assert process.returncode == 143 and "terminated; no output was written" in stderr, stderr
    assert _wait_for(lambda: all(_gone(pid) for pid in workers), 30), f"worker processes outlived {stop}"
    assert list(tmp_path.iterdir()) == []  # no GeoPackage, no temporary file beside it


def test_a_run_after_a_kill_9_during_extract_removes_what_the_killed_run_left(big_scene, random_model_file,
                                                                               tmp_path):
    out = tmp_path / "out"
    args = ("extract", big_scene, "--model", random_model_file, "--out", out, "--tta-scales", "1", "--tile", "256",
            "--overlap", "32", "--no-vectorize", "--precision", "fp32")
    process = _start(*args)
    assert _wait_for(lambda: any(out.glob(".road-extractor-*")) or process.poll() is not None)
    process.kill()
    process.wait()
    assert any(out.glob(".road-extractor-*"))  # a killed process cleans nothing up itself
    again = subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["suburb_road_mask.tif", "suburb_road_probability.tif"]


def test_a_model_that_diverged_is_refused_by_inspect_export_and_extract(tmp_path):
    network = build_model(ModelConfig(backbone="resnet18"))
    with torch.no_grad():
        next(network.parameters()).fill_(float("nan"))
    path = save_model(tmp_path / "diverged.pt", network, ModelInfo(gsd_m=1.0))
    with pytest.raises(CheckpointError, match="NaN or infinite values"):
        load_model(path)
    inspect = subprocess.run([sys.executable, "-m", "core", "inspect", str(path)], capture_output=True, text=True)
    assert "verdict     refused:" in inspect.stdout and "NaN or infinite" in inspect.stdout
    export = subprocess.run([sys.executable, "-m", "core", "export", str(path), "--model-file",
                             str(tmp_path / "copy.pt")], capture_output=True, text=True)
    assert export.returncode == 2 and "NaN or infinite" in export.stderr and not (tmp_path / "copy.pt").exists()


@pytest.mark.parametrize("gsd", ["-3", "nan", "inf"])
def test_export_refuses_an_impossible_gsd(random_model_file, tmp_path, gsd):
    result = subprocess.run([sys.executable, "-m", "core", "export", str(random_model_file), "--model-file",
                             str(tmp_path / "m.pt"), f"--gsd={gsd}"], capture_output=True, text=True)
    assert result.returncode == 2 and "give the metres per pixel" in result.stderr, result.stderr
    assert not (tmp_path / "m.pt").exists()


def test_evaluate_never_writes_json_over_an_input_or_an_existing_file(tmp_path):
    from core.frontends.demo import write_sample
    from core.inputs.sample import make_scene

    _, roads = write_sample(make_scene(256, seed=1), tmp_path)
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", str(roads), str(roads), "--json", str(roads)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "is one of the files being compared" in result.stderr
    assert roads.read_bytes()[:16] == b"SQLite format 3\x00"  # still the GeoPackage
    existing = tmp_path / "scores.json"
    existing.write_text("{}")
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", str(roads), str(roads), "--json",
                             str(existing)], capture_output=True, text=True)
    assert result.returncode == 2 and "--overwrite" in result.stderr and existing.read_text() == "{}"


def test_resume_passes_over_a_truncated_newest_checkpoint(tmp_path, capsys):
    from training.fit import _latest

    older, newer = tmp_path / "last.ckpt", tmp_path / "last-step.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}, "global_step": 50}, older)
    torch.save({"state_dict": {"w": torch.ones(1000)}, "global_step": 60}, newer)
    os.utime(older, (time.time() - 60, time.time() - 60))
    assert _latest(tmp_path) == str(newer)
    newer.write_bytes(newer.read_bytes()[:1500])  # a write cut short
    assert _latest(tmp_path) == str(older)
    assert "cannot be read" in capsys.readouterr().err
    older.write_bytes(b"")
    assert _latest(tmp_path) is None  # nothing usable: a fresh start (or --init), not a traceback


def test_a_band_count_the_model_cannot_take_is_refused(big_scene, random_model_file, tmp_path):
    result = subprocess.run([sys.executable, "-m", "core", "extract", str(big_scene), "--model",
                             str(random_model_file), "--out", str(tmp_path / "out"), "--bands", "1,2"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "2 band(s) chosen" in result.stderr and "takes 3" in result.stderr
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_folder_an_existing_file_and_an_unwritable_place(random_model_file, tmp_path):
    existing = tmp_path / "m.pt"
    existing.write_bytes(b"keep me")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    cases = [(tmp_path, "is a folder"), (existing, "already exists; allow overwriting (--overwrite)"),
             (tmp_path / "missing" / "m.pt", "does not exist")]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append((readonly / "m.pt", "not writable"))
    for target, message in cases:
        result = subprocess.run([sys.executable, "-m", "core", "export", str(random_model_file), "--model-file",
                                 str(target)], capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr, (target, result.stderr)
    assert existing.read_bytes() == b"keep me"
    replaced = subprocess.run([sys.executable, "-m", "core", "export", str(random_model_file), "--model-file",
                               str(existing), "--overwrite"], capture_output=True, text=True)
    assert replaced.returncode == 0 and existing.stat().st_size > 1000


def _limited(kilobytes: int):
    """A child process whose files may not grow past `kilobytes` (as `ulimit -f`): a full disk without root. The
    kernel's SIGXFSZ is ignored, so a write past the limit fails with EFBIG as on a full disk it fails with ENOSPC."""
    def limit() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (kilobytes * 1024, resource.RLIM_INFINITY))
    return limit


def test_a_full_disk_during_extract_gives_one_line_and_leaves_nothing(big_scene, random_model_file, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "core", "extract", big_scene, "--model", random_model_file,
                             "--out", out, "--tta-scales", "1", "--precision", "fp32", "--no-vectorize"],
                            capture_output=True, text=True, preexec_fn=_limited(16), timeout=300)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and "could not write the outputs" in last and "file size limit" in last, \
        result.stderr
    assert not out.exists()  # no half-written raster, no scratch folder, not even the folder it made


@pytest.fixture(scope="module")
def probability_raster(tmp_path_factory) -> Path:
    """A probability raster of the generated suburb's streets: a road network of some 30 roads to vectorize."""
    from core.inputs.sample import make_suburb

    path = tmp_path_factory.mktemp("probability") / "streets.tif"
    roads = make_suburb(1024, seed=4).roads.astype(np.uint8) * 230
    with rasterio.open(path, "w", driver="GTiff", width=1024, height=1024, count=1, dtype="uint8",
                       crs="EPSG:32619", transform=from_origin(330000, 4690000, 1, 1)) as ds:
        ds.write(roads, 1)
    return path


def test_a_full_disk_while_the_geopackage_is_written_is_refused_not_left_incomplete(probability_raster, tmp_path):
    whole = tmp_path / "whole.gpkg"
    done = subprocess.run([sys.executable, "-m", "core", "vectorize", probability_raster, "--out", whole],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    size_kb = whole.stat().st_size // 1024
    # Half the file: a write fails outright. Nearly all of it: GDAL used to finish the file without a layer's
    # spatial index and report success.
    for limit_kb in (size_kb // 2, size_kb - 8):
        out = tmp_path / f"limited-{limit_kb}" / "roads.gpkg"
        out.parent.mkdir()
        result = subprocess.run([sys.executable, "-m", "core", "vectorize", probability_raster, "--out", out],
                                capture_output=True, text=True, preexec_fn=_limited(limit_kb), timeout=300)
        last = result.stderr.strip().splitlines()[-1]
        assert result.returncode == 2 and f"could not write {out}" in last and "file size limit" in last, \
            (limit_kb, result.stderr)
        assert list(out.parent.iterdir()) == []  # no GeoPackage, no temporary file beside it


def test_what_points_at_the_storage_is_told_apart_from_other_failures(tmp_path):
    import errno

    from core.atomic import storage_refused

    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as disk:
            raise RuntimeError("Write failed") from disk
    except RuntimeError as exc:
        assert "is full" in storage_refused(exc, tmp_path)
    assert "full" in storage_refused(RuntimeError("sqlite3: database or disk is full"), tmp_path)
    assert storage_refused(ValueError("shapes (3,) and (4,) not aligned"), tmp_path) is None
