"""Region-scale extraction on a local Dask cluster of 2 worker processes: the same probabilities and road network as
one process, a worker killed mid-run, resuming after an interruption, and the errors of bad inputs."""

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from core.errors import InputError
from core.extraction.extract import ExtractParams, extract_roads
from core.frontends.region import MANIFEST, RegionJob, build_mosaic, expand_inputs, run_region
from core.inputs.raster import RasterioSource
from core.inputs.sample import make_scene
from core.model.checkpoint import load_model
from core.roads.vectorize import VectorizeParams, vectorize_file

distributed = pytest.importorskip("distributed")

SETTINGS = dict(block=448, tile=128, overlap=16, scales=[1.0])


@pytest.fixture(scope="module")
def mosaic_folder(tmp_path_factory) -> Path:
    """Four 384x384 georeferenced scenes side by side: a 768x768 mosaic at 1 m/px. Three are dark, so the mosaic
    is darker than the model's imagery and is brightened: every block must be brightened by the curve the
    one-process run measures on the whole mosaic."""
    root = tmp_path_factory.mktemp("mosaic")
    for i in range(2):
        for j in range(2):
            scene = make_scene(384, seed=10 + 2 * i + j)
            image = scene.image if (i, j) == (1, 1) else (scene.image * 0.35).astype(np.uint8)
            with rasterio.open(root / f"t{i}{j}.tif", "w", driver="GTiff", width=384, height=384, count=3,
                               dtype="uint8", crs="EPSG:32619",
                               transform=from_origin(300000 + j * 384, 4700000 - i * 384, 1, 1)) as ds:
                ds.write(image.transpose(2, 0, 1))
    return root


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                         env={"OMP_NUM_THREADS": "1"})
    client = Client(local)
    yield client
    client.close()
    local.close()


@pytest.fixture(scope="module")
def one_process(mosaic_folder, random_model_file, tmp_path_factory):
    """The reference: the same mosaic in one extract_roads call, vectorized the usual way."""
    out = tmp_path_factory.mktemp("single")
    mosaic = build_mosaic(expand_inputs([str(mosaic_folder)]), out / "mosaic.vrt")
    params = ExtractParams(tile=SETTINGS["tile"], overlap=SETTINGS["overlap"], scales=(1.0,), fixed_grid=True)
    with RasterioSource(mosaic) as source:
        result = extract_roads(source, load_model(random_model_file), out, params)
    assert any("gamma" in note for note in result.notes), result.notes
    network = vectorize_file(result.probability, out / "roads.gpkg", VectorizeParams())
    with rasterio.open(result.probability) as ds:
        probability = ds.read(1)
    return probability, network


def _job(mosaic_folder, model, out) -> RegionJob:
    return RegionJob(inputs=[str(mosaic_folder)], out_dir=str(out), model=str(model), **SETTINGS)


def _probability(result) -> np.ndarray:
    with rasterio.open(result.probability) as ds:
        return ds.read(1)


def _same_as_one_process(result, one_process) -> None:
    """Blocks compute the very tiles of the one-process run; only float rounding differs (worker processes run
    torch on one thread, the reference on all cores), by one grey level in a few pixels."""
    probability, network = one_process
    difference = np.abs(_probability(result).astype(int) - probability.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
    assert result.network["junction_count"] == network.junction_count
    assert result.network["length_km"] == pytest.approx(network.total_length_m / 1000, rel=0.01)


def test_two_workers_give_the_one_process_result(mosaic_folder, random_model_file, cluster, one_process,
                                                         tmp_path):
    seen = []
    result = run_region(_job(mosaic_folder, random_model_file, tmp_path), client=cluster, progress=seen.append)
    assert result.blocks == result.blocks_run == 4
    assert [p.blocks_done for p in seen] == [1, 2, 3, 4] and seen[-1].eta_s == 0
    _same_as_one_process(result, one_process)
    assert result.roads.exists() and (tmp_path / MANIFEST).exists()
    from urllib.request import urlopen

    with urlopen(cluster.dashboard_link, timeout=30) as page:  # the Dask dashboard shows the job's progress
        assert page.status == 200


def test_a_worker_killed_mid_run_has_its_blocks_rerun_elsewhere(mosaic_folder, random_model_file, cluster,
                                                                one_process, tmp_path):
    killed = []

    def kill_one(progress) -> None:
        if not killed:
            pids = cluster.run(os.getpid)
            pid = sorted(pids.values())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    result = run_region(_job(mosaic_folder, random_model_file, tmp_path), client=cluster, progress=kill_one)
    assert killed and result.blocks_run == 4
    pieces = sorted(p.name for p in (tmp_path / "pieces").iterdir())
    assert pieces == ["r0000_c0000", "r0000_c0001", "r0001_c0000", "r0001_c0001"]  # none twice, none half-written
    _same_as_one_process(result, one_process)
    cluster.wait_for_workers(2, timeout=120)


def test_an_interrupted_run_resumes_where_it_stopped(mosaic_folder, random_model_file, cluster, one_process,
                                                     tmp_path):
    def interrupt(progress) -> None:
        if progress.blocks_done == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_region(_job(mosaic_folder, random_model_file, tmp_path), client=cluster, progress=interrupt)
    result = run_region(_job(mosaic_folder, random_model_file, tmp_path), client=cluster)
    assert result.blocks == 4 and 1 <= result.blocks_run <= 3
    _same_as_one_process(result, one_process)


def test_a_folder_of_another_job_and_mixed_crs_are_refused(mosaic_folder, random_model_file, cluster, tmp_path):
    run_region(_job(mosaic_folder, random_model_file, tmp_path), client=cluster)
    other = RegionJob(inputs=[str(mosaic_folder)], out_dir=str(tmp_path), model=str(random_model_file),
                      **{**SETTINGS, "scales": [0.75, 1.0]})
    with pytest.raises(InputError, match="results of a different job"):
        run_region(other, client=cluster)
    odd = tmp_path / "odd"
    odd.mkdir()
    for name, crs in (("a.tif", "EPSG:32619"), ("b.tif", "EPSG:32618")):
        with rasterio.open(odd / name, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs=crs,
                           transform=from_origin(300000, 4700000, 1, 1)) as ds:
            ds.write(np.zeros((3, 64, 64), np.uint8))
    with pytest.raises(InputError, match="different CRSs"):
        run_region(RegionJob(inputs=[str(odd)], out_dir=str(tmp_path / "o"), model=str(random_model_file)),
                   client=cluster)
    assert not (tmp_path / "o").exists()  # refused inputs leave no output folder


@pytest.mark.parametrize("width, tile, overlap, block", [(1000, 128, 16, 448), (777, 256, 32, 300),
                                                         (5000, 512, 64, 1024), (600, 512, 64, 4096)])
def test_each_block_window_holds_exactly_the_grid_tiles_that_reach_its_core(width, tile, overlap, block):
    from core.frontends.region import plan_blocks
    from core.inputs.tiling import _starts

    grid = _starts(0, width, tile, tile - overlap)
    blocks = plan_blocks(width, width, (1.0, 1.0), block, tile, overlap)
    covered = np.zeros(width, int)
    for b in blocks:
        x0, _, x1, _ = b.core
        if b.row == 0:
            covered[int(x0):int(x1)] += 1
        window = _starts(b.window[0], b.window[2], tile, tile - overlap)

        def reaching(origins, x0=x0, x1=x1):
            return {o for o in origins if o < x1 and o + tile > x0}

        assert reaching(window) == reaching(grid), b
    assert (covered == 1).all()  # the cores tile the raster: no gap, no overlap


def test_the_command_line_runs_a_folder_on_two_workers_and_resumes(mosaic_folder, random_model_file, tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "core", "extract", str(mosaic_folder), "--model", str(random_model_file),
               "--out", str(tmp_path), "--workers", "2", "--block", "448", "--tile", "128", "--overlap", "16",
               "--tta-scales", "1"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "blocks 4/4" in first.stderr and "Dask dashboard" in first.stderr
    assert "4 blocks (4 run now)" in first.stdout and "mosaic_roads.gpkg" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "4 blocks (0 run now)" in again.stdout
