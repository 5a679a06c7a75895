"""STAC items (MLM extension) written by `export --stac`, and the one committed beside the shipped model: valid
against the extension's JSON schema vendored in resources/schemas/stac-mlm (no network: remote $refs resolve to
the vendored files), and up to date with the model file they describe."""

import copy
import json
import warnings
from pathlib import Path

import pytest

from core.frontends.cli import main
from core.model.catalog import DEFAULT_MODEL, SHIPPED_MODELS, read_catalog
from core.model.checkpoint import load_model
from core.model.stac import MLM_SCHEMA, item_path, stac_item

jsonschema = pytest.importorskip("jsonschema", reason="the dev extra's jsonschema validates STAC items")

SCHEMAS = Path(__file__).resolve().parents[1] / "resources" / "schemas" / "stac-mlm"
# The URLs the MLM schema's $refs name -> the vendored file answering each (README.md there says why raster's
# v1.1.0 is answered by its v1.0.0 file).
REFERENCED = {
    "https://stac-extensions.github.io/classification/v1.1.0/schema.json": "classification-v1.1.0.schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json": "processing-v1.1.0.schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json": "raster-v1.0.0.schema.json",
    "https://stac-extensions.github.io/raster/v1.0.0/schema.json": "raster-v1.0.0.schema.json",
}
SHIPPED = [entry.path for entry in read_catalog(SHIPPED_MODELS)]  # each shipped model has its item committed


def mlm_validator(*, with_artifact_type: bool = True):
    """A validator of the vendored MLM v1.3.0 schema. Its README defines `mlm:artifact_type` on the model asset,
    but its field list leaves it out, so any item using it fails (upstream issue 42, fixed in v1.4.0 by adding the
    field): `with_artifact_type` adds that one field as v1.4.0 does; nothing else is changed."""
    schema = json.loads((SCHEMAS / "mlm-v1.3.0.schema.json").read_text(encoding="utf-8"))
    assert schema["$id"] == MLM_SCHEMA
    if with_artifact_type:
        schema["$defs"]["fields"]["properties"]["mlm:artifact_type"] = {"type": "string", "minLength": 1}
    store = {url: json.loads((SCHEMAS / name).read_text(encoding="utf-8")) for url, name in REFERENCED.items()}
    with warnings.catch_warnings():  # RefResolver is deprecated in jsonschema >= 4.18, which still runs it
        warnings.simplefilter("ignore", DeprecationWarning)
        resolver = jsonschema.RefResolver.from_schema(schema, store=store)
    return jsonschema.Draft7Validator(schema, resolver=resolver)


def errors(item, **kwargs) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in mlm_validator(**kwargs).iter_errors(item)]


@pytest.fixture(scope="module", params=SHIPPED, ids=lambda path: path.name)
def shipped(request) -> Path:
    return request.param


@pytest.fixture(scope="module")
def committed(shipped):
    return json.loads(item_path(shipped).read_text(encoding="utf-8"))


def test_committed_item_is_valid(committed):
    assert errors(committed) == []
    # Against the schema exactly as vendored, the artifact type is its only complaint.
    assert errors(committed, with_artifact_type=False) == [
        "['assets', 'model']: 'mlm:artifact_type' does not match any of the regexes: '^(?!mlm:)'"]


def test_committed_item_is_up_to_date_with_the_model_file(committed, shipped):
    """Remade from the model file now, the item is the one committed: same bytes (checksum, size), same figures.
    When a model changes: road-extractor export resources/models/MODEL.pt --stac --overwrite"""
    model = load_model(shipped)
    fresh = stac_item(model, shipped, "road-extractor model")
    assert fresh == committed
    properties = committed["properties"]
    assert properties["road_extractor:metrics"] == model.info.metrics
    if shipped == DEFAULT_MODEL:  # version 4, as its card states
        assert properties["road_extractor:metrics"]["heldout_road_iou"] == pytest.approx(0.4996, abs=1e-4)
    assert properties["gsd"] == model.info.gsd_m
    assert properties["road_extractor:validation_tiles"] == model.info.provenance["validation_tiles"]
    model_asset = committed["assets"]["model"]
    assert "mlm:model" in model_asset["roles"] and model_asset["mlm:artifact_type"] == "torch.save"
    assert model_asset["file:size"] == shipped.stat().st_size
    assert (item_path(shipped).parent / model_asset["href"]).resolve() == shipped.resolve()


def test_required_fields_are_enforced(committed):
    for field in ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output"):
        broken = copy.deepcopy(committed)
        del broken["properties"][field]
        assert errors(broken), field
    broken = copy.deepcopy(committed)
    broken["assets"]["model"]["roles"] = ["data"]
    assert errors(broken)
    broken = copy.deepcopy(committed)
    broken["properties"]["mlm:input"][0]["value_scaling"][0] = {"type": "z-score", "mean": 1.0}
    assert errors(broken)


def test_export_writes_an_item_beside_each_output(random_model_file, tmp_path, capsys):
    onnx, pt = tmp_path / "m.onnx", tmp_path / "m2.pt"
    assert main(["export", str(random_model_file), "--onnx", str(onnx), "--model-file", str(pt), "--stac"]) == 0
    onnx_item = json.loads(item_path(onnx).read_text(encoding="utf-8"))
    pt_item = json.loads(item_path(pt).read_text(encoding="utf-8"))
    assert errors(onnx_item) == [] and errors(pt_item) == []
    assert onnx_item["properties"]["mlm:framework"] == "ONNX"
    assert onnx_item["assets"]["model"]["mlm:artifact_type"] == "onnx"
    assert onnx_item["assets"]["model"]["file:size"] == onnx.stat().st_size
    assert onnx_item["properties"]["mlm:output"][0]["name"] == "logits"
    assert pt_item["properties"]["mlm:framework"] == "PyTorch"
    # Existing items are not replaced without --overwrite, and nothing is written then.
    assert main(["export", str(random_model_file), "--stac"]) == 0
    assert main(["export", str(random_model_file), "--stac"]) == 2
    assert "exists" in capsys.readouterr().err


def test_deepness_item_describes_its_graph(random_model_file, tmp_path):
    onnx = tmp_path / "d.onnx"
    assert main(["export", str(random_model_file), "--onnx", str(onnx), "--for", "deepness", "--tile", "64",
                 "--stac"]) == 0
    item = json.loads(item_path(onnx).read_text(encoding="utf-8"))
    assert errors(item) == []
    (model_input,), (output,) = item["properties"]["mlm:input"], item["properties"]["mlm:output"]
    assert model_input["input"]["shape"] == [-1, 3, 64, 64]
    assert model_input["value_scaling"] == [{"type": "scale", "value": 255.0}]
    assert output["name"] == "probabilities" and output["result"]["shape"] == [-1, 2, 64, 64]
    assert item["properties"]["road_extractor:io"] == "deepness"
