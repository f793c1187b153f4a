"""The chart's tests import `tests/monitoring.py` (shared with the e2e suite) by name; importlib
mode does not put tests/ on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parents[2]))  # last: never in front of a level's own helpers
