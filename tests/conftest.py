import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# QGIS's own plugins (Processing) live outside site-packages on Debian.
for plugins in ("/usr/share/qgis/python/plugins",):
    if Path(plugins).is_dir() and plugins not in sys.path:
        sys.path.append(plugins)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip where a user's checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present on the project's machines)")
    return SHARED_DATA
