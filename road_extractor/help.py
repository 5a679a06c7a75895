"""Where the plugin's Help opens: the documentation site shipped inside the plugin zip (so it works offline), or,
in a checkout, the site `make docs` built, or the page's Markdown."""

from __future__ import annotations

from pathlib import Path

PLUGIN = Path(__file__).resolve().parent
HELP_FOLDER = "help"  # the built site inside the plugin zip (road_extractor.packaging)


def help_page(page: str = "user/qgis-plugin") -> Path | None:
    """The local file that shows `page` (a docs page without its .md), best first; None where none is there."""
    checkout = PLUGIN.parent
    for candidate in (PLUGIN / HELP_FOLDER / page / "index.html", checkout / "site" / page / "index.html",
                      checkout / "docs" / f"{page}.md"):
        if candidate.exists():
            return candidate
    return None
