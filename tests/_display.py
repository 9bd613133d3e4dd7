"""Skip Qt tests where no display is available (a fresh Linux machine without Xvfb)."""

import os
import sys

import pytest

HAS_DISPLAY = not sys.platform.startswith("linux") or bool(
    os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
REASON = "no display: run the Qt tests under xvfb-run (as .ci/run does)"
needs_display = pytest.mark.skipif(not HAS_DISPLAY, reason=REASON)
