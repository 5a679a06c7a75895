"""MkDocs hook: the site is built from docs/, but some pages live elsewhere in the repository and some links leave
docs/ (the model card beside its model file, CHANGELOG.md, code files).

- A page whose Markdown holds `<!-- include: PATH -->` (PATH relative to the repository root) is replaced by that
  file, so the file keeps one home and the site shows it.
- A relative link or image that leaves docs/ is pointed at the page that includes its target, else at the file on
  GitHub, so the same Markdown works on GitHub (relative links) and on the site (strict build, no broken link).
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
GITHUB = "https://github.com/road-extractor/road-extractor/blob/main/"
INCLUDE = re.compile(r"<!--\s*include:\s*(\S+)\s*-->")
# ](target) of Markdown links and images, src="target" of HTML images
LINK = re.compile(r"(\]\(|src=\")([^)\"\s]+)")


def _included() -> dict[str, str]:
    """Repository path of each included file -> the docs page (relative to docs/) that shows it."""
    pages = {}
    for page in DOCS.rglob("*.md"):
        match = INCLUDE.search(page.read_text(encoding="utf-8"))
        if match:
            pages[match.group(1)] = page.relative_to(DOCS).as_posix()
    return pages


def _rewrite(markdown: str, source_dir: str, page_dir: str, included: dict[str, str]) -> str:
    """Links written relative to `source_dir` (repository-relative) for a page in `page_dir` (docs-relative)."""

    def fix(match: re.Match) -> str:
        opener, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = posixpath.normpath(posixpath.join(source_dir, path))
        if resolved.startswith("docs/"):
            new = posixpath.relpath(resolved[len("docs/"):], page_dir or ".")
        elif resolved in included:
            new = posixpath.relpath(included[resolved], page_dir or ".")
        else:
            new = GITHUB + resolved
        return opener + new + ("#" + anchor if anchor else "")

    return LINK.sub(fix, markdown)


def on_page_markdown(markdown, page, config, files):
    page_path = page.file.src_uri  # relative to docs/
    page_dir = posixpath.dirname(page_path)
    included = _included()
    match = INCLUDE.search(markdown)
    if match:
        source = match.group(1)
        text = (REPO / source).read_text(encoding="utf-8")
        return _rewrite(text, posixpath.dirname(source), page_dir, included)
    return _rewrite(markdown, posixpath.join("docs", page_dir), page_dir, included)
