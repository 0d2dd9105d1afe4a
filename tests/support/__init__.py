"""Builders shared by the tests: paths, training sets, tiny saved models, checks of files marked synthetic.

`tests/` is on the import path (``pythonpath`` in ``pyproject.toml``), so a test
imports ``from support import REPO_ROOT`` or ``from support.datasets import
write_training_set`` wherever it sits in the mirrored tree.
"""

from pathlib import Path

#: The repository's root folder.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The demo preprocessing config (``configs/demo/preprocess.yaml``).
DEMO_PREPROCESS_CONFIG = REPO_ROOT / "configs" / "demo" / "preprocess.yaml"
