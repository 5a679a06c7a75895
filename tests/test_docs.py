"""The documentation: the site builds strictly, the figures it quotes from the shipped model file are the file's, the
front page stays short, every relative link names a file that exists, and the release's version and changelog agree
across CHANGELOG.md, metadata.txt and the package."""

import configparser
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import core

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "resources" / "models" / "roads-resnet18-massachusetts.pt"
FRONT_PAGE_LINES = 200


def _pages() -> list[Path]:
    """Every Markdown file of the documentation: the front page, the changelog, the model card and docs/."""
    return [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "resources" / "models" / "README.md",
            *sorted((REPO / "docs").rglob("*.md"))]


def _flat(text: str) -> str:
    return " ".join(text.split())


# --- (a) the site -------------------------------------------------------------------------------------------------

def test_the_site_builds_strictly_with_every_page(tmp_path):
    for module in ("mkdocs", "material"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[docs]', part of the dev extra): the site "
                        f"cannot be built here")
    site = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                          "-d", str(site)], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    # strict: a broken link, a missing anchor, a page outside the nav or a nav entry without a page fails the build
    assert run.returncode == 0, run.stdout + run.stderr
    # the pages others point at: the plugin's help opens the first, the front page links the rest
    for page in ("index.html", "user/qgis-plugin/index.html", "user/command-line/index.html",
                 "model-card/index.html", "changelog/index.html", "protocols/index.html"):
        assert (site / page).is_file(), page
    card = (site / "model-card" / "index.html").read_text(encoding="utf-8")
    assert "roads-resnet18-massachusetts" in card and "Candidates and the rule that ships them" in card
    assert "Model version 4" in (site / "changelog" / "index.html").read_text(encoding="utf-8")


def test_every_markdown_file_in_docs_is_a_page_of_the_site():
    nav = (REPO / "mkdocs.yml").read_text()
    listed = set(re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", nav, re.M))
    pages = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    assert pages - listed == set(), "pages missing from mkdocs.yml's nav"
    assert listed - pages == set(), "nav entries without a page"


# --- (b) figures quoted from the shipped model file ---------------------------------------------------------------

# Where the pages quote the shipped model's own figures (its description's `metrics`), in the wording they use;
# whitespace and line breaks do not matter. History (the changelog, the protocols' records) is left out: it quotes
# the version it speaks of, which stays true when a new version ships.
QUOTES = {
    "docs/training/commands.md": [
        "Held-out road IoU {heldout_road_iou:.4f}, F1 {heldout_f1:.3f}, APLS {heldout_apls:.3f} at one scale (fp32;",
        "{heldout_multiscale_road_iou:.3f} / {heldout_multiscale_f1:.3f} / {heldout_multiscale_apls:.3f} at "
        "0.75/1/1.25; mIoU {heldout_miou:.3f} against {heldout_miou_all_background:.3f} for predicting background "
        "everywhere; Vegas completeness {lines_completeness:.3f} at correctness {lines_correctness:.3f}",
    ],
    "docs/user/qgis-plugin.md": [
        "the held-out road IoU the model file records: {heldout_road_iou:.3f} for version 4",
    ],
    "docs/user/command-line.md": [
        "| `auto` (gamma 0.68) | **{lines_completeness:.3f} +- {lines_completeness_sd:.3f} / {lines_correctness:.3f} "
        "+- {lines_correctness_sd:.3f}**",
    ],
    "resources/models/README.md": [
        "| **4 (this file)** |",
        "**{heldout_road_iou:.4f} / {heldout_f1:.3f} / {heldout_apls:.3f}** ({heldout_multiscale_road_iou:.3f} / "
        "{heldout_multiscale_f1:.3f} / {heldout_multiscale_apls:.3f} at 0.75/1/1.25; {heldout_arithmetic})",
        "**{lines_completeness:.3f} +- {lines_completeness_sd:.3f} / {lines_correctness:.3f} +- "
        "{lines_correctness_sd:.3f}** ({lines_arithmetic}, {lines_shifts} origins;",
        "Version 4 reaches {heldout_road_iou:.4f} / {heldout_apls:.3f} at home",
        "Predicting background everywhere gives road IoU 0 and mIoU {heldout_miou_all_background:.3f} on these tiles",
    ],
}


# The world model's figures (its description's per-place table and Vegas lines), where pages quote them.
WORLD_QUOTES = {  # (page, world model file): quotes of that file's own per-place and Vegas-tile figures
    ("README.md", "roads-resnet18-world-0.5m.pt"): [
        "(relaxed F1 {Las Vegas:.2f} Las Vegas, {Japan:.2f} Japan, {Ottawa:.2f} Ottawa; {completeness:.0%} of the "
        "Las Vegas tile's road length at correctness {correctness:.2f},",
    ],
    ("README.md", "roads-resnet18-world.pt"): ["resolution (relaxed F1 {Shanghai:.2f} Shanghai, {Dubai:.2f} Dubai):"],
    ("resources/models/README.md", "roads-resnet18-world-0.5m.pt"): [
        "Las Vegas {Las Vegas:.3f}, Shanghai {Shanghai:.3f}, Japan {Japan:.3f}, Dubai {Dubai:.3f}, Ottawa "
        "{Ottawa:.3f}; the SpaceNet Las Vegas tile (never trained on) {completeness:.3f} of its road length found at "
        "correctness {correctness:.3f}",
    ],
    ("resources/models/README.md", "roads-resnet18-world.pt"): [
        "Las Vegas {Las Vegas:.3f}, Shanghai {Shanghai:.3f}, Japan {Japan:.3f}, Dubai {Dubai:.3f}, Ottawa "
        "{Ottawa:.3f}; the SpaceNet Las Vegas tile {completeness:.3f} of its road length found at correctness "
        "{correctness:.3f}",
    ],
}


@pytest.mark.parametrize("page, model", sorted(WORLD_QUOTES), ids=lambda value: str(value))
def test_figures_quoted_from_the_world_model_are_the_files(page, model):
    pytest.importorskip("torch")
    from core.model.checkpoint import load_model

    metrics = load_model(REPO / "resources/models" / model).info.metrics
    figures = {place: row["relaxed_f1"] for place, row in metrics["places"].items()}
    figures.update(completeness=metrics["lines_completeness"], correctness=metrics["lines_correctness"])
    text = _flat((REPO / page).read_text(encoding="utf-8"))
    for quote in WORLD_QUOTES[page, model]:
        expected = _flat(quote.format(**figures))
        assert expected in text, (f"{page} should quote {model}'s figures as {expected!r}: the model changed, or "
                                  f"the page did")


@pytest.fixture(scope="module")
def shipped_metrics() -> dict:
    pytest.importorskip("torch")
    from core.model.checkpoint import load_model

    return load_model(MODEL).info.metrics


@pytest.mark.parametrize("page", sorted(QUOTES))
def test_figures_quoted_from_the_shipped_model_are_the_files(page, shipped_metrics):
    text = _flat((REPO / page).read_text(encoding="utf-8"))
    for quote in QUOTES[page]:
        expected = _flat(quote.format(**shipped_metrics))
        assert expected in text, (f"{page} should quote the shipped model file's figures as {expected!r}: the model "
                                  f"changed, or the page did")


# --- (c) the front page and the links -----------------------------------------------------------------------------

def test_the_front_page_is_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= FRONT_PAGE_LINES, (f"README.md has {lines} lines (at most {FRONT_PAGE_LINES}): move the detail "
                                       f"into a page under docs/ and link it")


_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|\b(?:src|href)=\"([^\"]+)\"")


def relative_links(page: Path) -> list[str]:
    text = _CODE.sub("", _FENCE.sub("", page.read_text(encoding="utf-8")))
    targets = [a or b for a, b in _LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^#|^/", t)]


def test_the_link_reader_finds_links_and_leaves_code_alone(tmp_path):
    page = tmp_path / "p.md"
    page.write_text('[a](x.md#b) ![i](img/p.png "t") <img src="q.jpg" width="3"> [web](https://x.org) [here](#h)\n'
                    "`[no](code.md)`\n```\n[no](fence.md)\n```\n")
    assert relative_links(page) == ["x.md#b", "img/p.png", "q.jpg"]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_names_a_file_that_exists(page):
    broken = [t for t in relative_links(page) if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not broken, f"{page.relative_to(REPO)} links to files that do not exist: {broken}"


# --- releases -----------------------------------------------------------------------------------------------------

def _latest_release() -> tuple[str, str]:
    """CHANGELOG.md's latest project version and the one-line summary that opens its entry."""
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    project = text.split("## Project versions", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^### (\d+\.\d+\.\d+)\b[^\n]*\n\n([^\n]+)\n", project, re.M)
    assert match, "CHANGELOG.md's 'Project versions' should open with '### X.Y.Z ...', a blank line and a summary"
    return match.group(1), match.group(2)


def test_the_version_and_changelog_agree_everywhere():
    version, summary = _latest_release()
    assert core.__version__ == version, "core.__version__ (the package's version) and CHANGELOG.md's latest entry"
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt", encoding="utf-8")
    general = metadata["general"]
    assert general["version"] == version, "metadata.txt's version and CHANGELOG.md's latest entry"
    assert general["changelog"].strip().splitlines()[0] == f"{version}: {summary}", (
        "metadata.txt's changelog should open with the latest entry of CHANGELOG.md: 'VERSION: its summary line'")
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "core.__version__"}


def test_model_files_record_the_project_version_and_older_files_load(tmp_path):
    torch = pytest.importorskip("torch")
    from core.model import ModelConfig, build_model
    from core.model.checkpoint import ModelInfo, load_model, save_model

    network = build_model(ModelConfig(backbone="resnet18"))
    path = save_model(tmp_path / "m.pt", network, ModelInfo(config=network.config, gsd_m=1.0), half=True)
    assert load_model(path).info.project_version == core.__version__
    # a file from before the field: its description lacks the key, and it loads as before
    payload = torch.load(path, weights_only=True)
    assert payload["info"].pop("project_version") == core.__version__
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt").info
    assert old.project_version is None and "project_version" not in old.to_dict() and old.gsd_m == 1.0
