"""Fixtures for the multimodal tests (the dataset writer is tests/multimodal/fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.multimodal.fixtures import write_dataset


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "ds")


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # These tensors are tiny: a second OpenMP thread only adds barrier waits, which on a shared
    # 2-core machine stalled single tests for seconds. Restored so other packages are unaffected.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
