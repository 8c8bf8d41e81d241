"""Imported by every benchmark script before ``hymba``: on a plain clone where the project is not installed (a
bare CUDA machine, ``python benchmarks/NAME.py`` from the repository root) it puts the clone's ``src/`` on the
import path, so each benchmark runs as a plain command; where ``hymba`` is installed it changes nothing."""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("hymba") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
