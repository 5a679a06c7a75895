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
    params = ExtractParams(tile=SETTINGS["tile"], overlap=SETTINGS["overlap"], scales=(1.0,))
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
    with rasterio.open(tmp_path / "tiny.tif", "w", driver="GTiff", width=20, height=20, count=3, dtype="uint8",
                       crs="EPSG:32619", transform=from_origin(300000, 4700000, 1, 1)) as ds:
        ds.write(np.zeros((3, 20, 20), np.uint8))
    with pytest.raises(InputError, match="needs at least 32x32"):
        run_region(RegionJob(inputs=[str(tmp_path / "tiny.tif")], out_dir=str(tmp_path / "t"),
                             model=str(random_model_file)), client=cluster)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("width, height, scale, tile, overlap, block", [
    (1000, 700, 1.0, 128, 16, 448), (777, 1500, 1.0, 256, 32, 300), (5000, 3000, 1.0, 768, 32, 4096),
    (600, 600, 1.0, 512, 64, 4096), (1200, 1200, 1.0, 768, 32, 256), (700, 600, 0.5, 128, 16, 256),
    (900, 500, 1.6, 256, 32, 300)])
def test_blocks_are_whole_tiles_of_the_one_process_plan_and_blend_as_it_does(width, height, scale, tile, overlap,
                                                                             block):
    """The blocks' cores tile the input; each block computes the one-process plan's tiles reaching its core (and,
    off the model's resolution, the pixels around it that resampling reads), and blending only those, in the plan's
    order, gives every pixel it owns exactly the one-process run's value."""
    from core.frontends.region import plan_blocks
    from core.inputs.tiling import TileGrid, blend_weights

    input_size = (round(width / scale), round(height / scale))
    blocks = plan_blocks(width, height, (scale, scale), block, tile, overlap, input_size)
    plan = TileGrid(0, 0, width, height, tile, overlap)
    tiles = [t for row in plan.rows() for t in row]
    values = np.random.default_rng(0).random((len(tiles), tiles[0].height, tiles[0].width), np.float32)

    def blend(chosen) -> np.ndarray:
        weighted, weights = np.zeros((height, width), np.float32), np.zeros((height, width), np.float32)
        for i, t in enumerate(tiles):
            if (t.row, t.col) in chosen:
                w = blend_weights(t.height, t.width, overlap)
                weighted[t.y:t.y + t.height, t.x:t.x + t.width] += values[i] * w
                weights[t.y:t.y + t.height, t.x:t.x + t.width] += w
        return np.where(weights > 0, weighted / np.maximum(weights, 1e-12), np.nan)

    reference = blend({(t.row, t.col) for t in tiles})
    owned = np.zeros(input_size[::-1], int)
    margin = 0 if scale == 1.0 else int(np.ceil(max(1.0, scale))) + 1
    for b in blocks:
        x0, y0, x1, y1 = b.core
        owned[y0:y1, x0:x1] += 1
        px0, py0 = max(0, int(np.floor(x0 * scale)) - margin), max(0, int(np.floor(y0 * scale)) - margin)
        px1, py1 = min(width, int(np.ceil(x1 * scale)) + margin), min(height, int(np.ceil(y1 * scale)) + margin)
        reaching = {(t.row, t.col) for t in tiles if t.x < px1 and t.x + t.width > px0
                    and t.y < py1 and t.y + t.height > py0}
        computed = {(t.row, t.col) for row in b.tiles.rows() for t in row}
        assert computed == reaching, b.id
        assert b.tiles.plan == plan
        assert np.array_equal(blend(computed)[py0:py1, px0:px1], reference[py0:py1, px0:px1]), b.id
    assert (owned == 1).all()  # the cores tile the input: no gap, no overlap
    if block >= max(width, height):
        assert len(blocks) == 1
    else:  # about `block` pixels a side, in whole tiles
        cols = max(b.col for b in blocks) + 1
        assert cols == min(len(plan.rows()[0]), -(-width // block))


def test_a_changed_block_plan_never_reuses_pieces(mosaic_folder, random_model_file, tmp_path):
    """The manifest's fingerprint holds the blocks themselves: another --block (or a plan made by another version
    for the same settings) refuses the folder instead of mixing pieces cut differently."""
    from core.frontends.region import plan_blocks

    job = _job(mosaic_folder, random_model_file, tmp_path)
    blocks = plan_blocks(768, 768, (1.0, 1.0), job.block, job.tile, job.overlap)
    assert job.fingerprint(blocks) == job.fingerprint(plan_blocks(768, 768, (1.0, 1.0), job.block, job.tile,
                                                                   job.overlap))
    assert job.fingerprint(blocks) != job.fingerprint(blocks[:1] + [blocks[1].__class__(
        blocks[1].row, blocks[1].col, (400, *blocks[1].core[1:]), blocks[1].tiles)] + blocks[2:])
    assert job.fingerprint(blocks) != job.fingerprint(plan_blocks(768, 768, (1.0, 1.0), 300, job.tile, job.overlap))
    from core.frontends.region import Manifest

    Manifest(tmp_path / MANIFEST, job.fingerprint(blocks)).add({"id": "r0000_c0000", "probability": "p",
                                                                 "mask": "m"})
    with pytest.raises(InputError, match="results of a different job"):
        Manifest(tmp_path / MANIFEST, job.fingerprint(plan_blocks(768, 768, (1.0, 1.0), 300, job.tile, job.overlap)))


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


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_a_region_run_of_real_tiles_gives_the_one_process_mask(precision, shared_data, cluster, tmp_path):
    """The shipped model on 1200x1200 px of a Massachusetts tile (25229185_15), written as four 600x600 GeoTIFFs
    side by side; defaults but one scale. One process fits 4 tiles of 624 px to the mosaic; two workers with
    --block 256 run 4 blocks of whole tiles of that plan. The masks must be the same pixel for pixel (before the
    blocks were cut from the plan, 0.55% of them differed). Default precision, and fp32 or bf16 where they differ
    from it and the hardware has them."""
    from PIL import Image

    from core.extraction.devices import DeviceError, resolve_device, resolve_precision
    from core.frontends.jobs import ExtractJob, run_extract

    default = resolve_precision("auto", resolve_device("auto")).name
    if precision != "auto":
        if precision == default:
            pytest.skip(f"the default run already is {precision}")
        try:
            resolve_precision(precision, resolve_device("auto"))
        except DeviceError as exc:
            pytest.skip(str(exc))
    image = np.asarray(Image.open(shared_data / "massroads/images/25229185_15.png").convert("RGB"))[:1200, :1200]
    folder = tmp_path / "tiles"
    folder.mkdir()
    for i in range(2):
        for j in range(2):
            with rasterio.open(folder / f"t{i}{j}.tif", "w", driver="GTiff", width=600, height=600, count=3,
                               dtype="uint8", crs="EPSG:26986",
                               transform=from_origin(200000 + j * 600, 900000 - i * 600, 1, 1)) as ds:
                ds.write(image[i * 600:(i + 1) * 600, j * 600:(j + 1) * 600].transpose(2, 0, 1))
    options = dict(scales=[1.0], precision=precision, vectorize=False)
    mosaic = build_mosaic(expand_inputs([str(folder)]), tmp_path / "mosaic.vrt")
    single = run_extract(ExtractJob(input=str(mosaic), out_dir=str(tmp_path / "single"), **options))
    region = run_region(RegionJob(inputs=[str(folder)], out_dir=str(tmp_path / "region"), block=256, **options),
                        client=cluster)
    assert single["tiles"] == 4 and region.blocks == 4
    with rasterio.open(single["mask"]) as a, rasterio.open(region.mask) as b:
        one, blocks = a.read(1), b.read(1)
    with rasterio.open(single["probability"]) as a, rasterio.open(region.probability) as b:
        difference = np.abs(a.read(1).astype(int) - b.read(1).astype(int))
    differing = (one != blocks).mean()
    print(f"{precision} ({default if precision == 'auto' else precision}): masks differ on {differing:.5%} of "
          f"pixels, probabilities by at most {difference.max()}/255 (on {(difference > 0).mean():.5%})")
    assert one.shape == blocks.shape == (1200, 1200)
    assert (one == 1).mean() > 0.01, "the shipped model should find roads here"
    # Same tiles, same blending: equal here (0 pixels on a 2-core AMD EPYC). A machine whose torch sums in another
    # order with its thread count may move a probability by one grey level; the bound is 0.01% of the mask.
    assert differing < 1e-4 and difference.max() <= 1


def test_off_the_model_resolution_blocks_still_give_the_one_process_result(random_model_file, cluster, tmp_path):
    """0.7 m imagery for a 1 m model: block borders fall between processing pixels and the results are resampled
    to the input's grid; each block also computes the tiles under the pixels around its core that bilinear
    resampling reads, so the outputs still equal one process's (16 blocks of 560x560 processing pixels)."""
    folder = tmp_path / "tiles"
    folder.mkdir()
    for i in range(2):
        for j in range(2):
            scene = make_scene(400, seed=10 + 2 * i + j)
            with rasterio.open(folder / f"t{i}{j}.tif", "w", driver="GTiff", width=400, height=400, count=3,
                               dtype="uint8", crs="EPSG:32619",
                               transform=from_origin(300000 + j * 280, 4700000 - i * 280, 0.7, 0.7)) as ds:
                ds.write(scene.image.transpose(2, 0, 1))
    from core.frontends.jobs import ExtractJob, run_extract

    options = dict(model=str(random_model_file), tile=128, overlap=16, scales=[1.0], vectorize=False)
    mosaic = build_mosaic(expand_inputs([str(folder)]), tmp_path / "mosaic.vrt")
    single = run_extract(ExtractJob(input=str(mosaic), out_dir=str(tmp_path / "single"), **options))
    region = run_region(RegionJob(inputs=[str(folder)], out_dir=str(tmp_path / "region"), block=150, **options),
                        client=cluster)
    assert region.blocks == 16
    for kind in ("probability", "mask"):
        with rasterio.open(single[kind]) as a, rasterio.open(getattr(region, kind)) as b:
            one, blocks = a.read(1).astype(int), b.read(1).astype(int)
            assert a.shape == b.shape == (800, 800), kind
            # Equal where the threads sum alike (one process on 2 threads, workers on 1 can differ by a grey
            # level); never more than one level, and the masks within the 0.01%.
            assert np.abs(one - blocks).max() <= 1 and (kind == "probability" or (one != blocks).mean() < 1e-4), kind
