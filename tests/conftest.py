"""Shared fixtures: the real data samples in ``../shared/data``, the review app's simulated set, one torch thread.

Shared builders (not fixtures) are in the `support` package beside this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support import REPO_ROOT


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (override with CARDIACNETS_SHARED_DATA)."""
    env = os.environ.get("CARDIACNETS_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def private_bundle_cache(tmp_path_factory):
    """Bundles the tests load are materialised in a temporary cache, not in the user's ~/.cache/cardiacnets."""
    previous = os.environ.get("CARDIACNETS_CACHE")
    os.environ["CARDIACNETS_CACHE"] = str(tmp_path_factory.mktemp("bundle-cache"))
    yield
    if previous is None:
        os.environ.pop("CARDIACNETS_CACHE", None)
    else:
        os.environ["CARDIACNETS_CACHE"] = previous


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"real data samples not found at {path}; set CARDIACNETS_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def ukb_xml_path(shared_data) -> Path:
    return shared_data / "ukb_ecg_xml" / "ukbb_scrubbed.xml"


@pytest.fixture(scope="session")
def ptbxl_dir(shared_data) -> Path:
    return shared_data / "ptbxl"


@pytest.fixture(scope="session")
def ptbdb_record(shared_data) -> Path:
    return shared_data / "ptbdb" / "s0010_re"


@pytest.fixture(scope="session")
def acdc_dir(shared_data) -> Path:
    return shared_data / "acdc_h5"


@pytest.fixture(scope="session")
def review_dataset(tmp_path_factory) -> Path:
    """8 simulated subjects preprocessed with the demo config, shared by the review-app tests."""
    from support.review import build_review_dataset

    return build_review_dataset(tmp_path_factory.mktemp("review_data"))


@pytest.fixture
def one_torch_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine two OpenMP threads can stall.

    Test modules of models use it for every test: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
