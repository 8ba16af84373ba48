"""Test-wide settings: no network, a private HF cache, deterministic CPU torch."""

import os
import tempfile

# Must run before anything imports huggingface_hub / diffusers / transformers (they read these at import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="ifsq-hf-test-home-"))

import pytest
import torch

# Two pytest-xdist workers share two cores: one intra-op thread each.
torch.set_num_threads(int(os.environ.get("IFSQ_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def fake_hub():
    """A loopback fake Hub; talk to it from a subprocess with ``env=fake_hub.env(home)`` (see tests/fakehub.py)."""
    from fakehub import FakeHub

    with FakeHub() as hub:
        yield hub
