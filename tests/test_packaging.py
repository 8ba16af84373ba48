"""The package as a user installs it: build an sdist, build the wheel from that sdist, install the wheel into a fresh
venv (not editable, the repository not on ``sys.path``) and run the README's Use snippet from a temporary folder.

The fresh venv gets the already-installed dependencies through a ``.pth`` line pointing at this environment's
site-packages (that adds the folder to ``sys.path`` but runs none of its ``.pth`` files, so the editable install
of the repository stays invisible); ``ifsq_hf`` itself can only come from the wheel. The built wheel is cached by
a hash of the sources, so reruns skip the build.
"""

import hashlib
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from ifsq_hf import iFSQAutoencoder
from ifsq_hf.metrics.weights import cache_dir
from test_generic_loading import dit_folder, llamagen_folder

REPO = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "src")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
LABELS = {0: "astronaut", 1: "coffee", 2: "rocket"}  # the names the README snippet asks for


def run(cmd, cwd=None, env=None, timeout=300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def sources_hash() -> str:
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        path = REPO / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            if not file.is_file() or file.suffix == ".pyc" or "__pycache__" in file.parts or ".egg-info" in str(file):
                continue
            digest.update(str(file.relative_to(REPO)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def setuptools_ok() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """sdist + wheel (built from the sdist, as `python -m build` does), cached by a hash of the sources."""
    out = cache_dir() / "test-dists" / sources_hash()
    if not (out.is_dir() and list(out.glob("*.whl")) and list(out.glob("*.tar.gz"))):
        work = tmp_path_factory.mktemp("build")
        source = work / "source"
        source.mkdir()
        for name in BUILD_INPUTS:
            if (REPO / name).is_dir():
                shutil.copytree(REPO / name, source / name, ignore=SKIP)
            elif (REPO / name).exists():
                shutil.copy2(REPO / name, source / name)
        staging = work / "dist"
        staging.mkdir()
        run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(staging)!r})"],
            cwd=source)  # fmt: skip
        (sdist,) = staging.glob("*.tar.gz")
        with tarfile.open(sdist) as tf:
            tf.extractall(work / "unpacked", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        (unpacked,) = (work / "unpacked").iterdir()
        isolation = ["--no-build-isolation"] if setuptools_ok() else []  # else pip fetches setuptools>=77
        run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(staging), str(unpacked)])
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(staging, out)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_metadata_has_lower_bounds_license_and_all_files(dists):
    with zipfile.ZipFile(dists["wheel"]) as zf:
        names = zf.namelist()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(metadata_name).decode())
    assert metadata["License-Expression"] == "Apache-2.0"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    import ifsq_hf

    assert metadata["Version"] == ifsq_hf.__version__
    requirements = metadata.get_all("Requires-Dist")
    core = [r for r in requirements if "extra ==" not in r]
    assert {re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in core} == {
        "torch", "diffusers", "transformers", "huggingface-hub", "safetensors", "numpy", "pillow"
    }  # fmt: skip
    for requirement in requirements:  # lower bounds only: no caps, no pins
        specifier = requirement.split(";")[0]
        assert "<" not in specifier and "==" not in specifier, requirement
    extras = set(metadata.get_all("Provides-Extra"))
    assert {"train", "metrics", "demo", "repa-offline", "test", "bench", "dev", "all"} <= extras
    for needed in ("ifsq_hf/py.typed", "ifsq_hf/model_cards/dit_pipeline.md",
                   "ifsq_hf/metrics/evaluate_modules/lpips/lpips.py", "ifsq_hf/pipelines/custom_pipeline.py"):  # fmt: skip
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "examples/")) for n in names)
    with tarfile.open(dists["sdist"]) as tf:
        sdist_names = {n.split("/", 1)[-1] for n in tf.getnames()}
    assert {"LICENSE", "pyproject.toml", "README.md", "src/ifsq_hf/__init__.py"} <= sdist_names


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_readme_snippet(dists, tmp_path):
    # no PYTHONPATH & co. from this session: the fresh venv sees only what is installed into it
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "home"), PYTHONNOUSERSITE="1")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], env=env)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    # the wheel first (pip would take the editable install it sees through the .pth below as "already installed")
    run([*pip, "install", "--no-deps", "--no-index", "-q", str(dists["wheel"])], env=env)
    # then the dependencies of this environment, not its .pth files (its editable ifsq_hf stays out of sight)
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env).strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()}
    Path(purelib, "_ifsq_hf_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    # every declared dependency is satisfied by what the venv sees (other packages' complaints are not ours)
    proc = subprocess.run([*pip, "check"], capture_output=True, text=True, env=env)
    assert not [line for line in proc.stdout.splitlines() if line.lower().startswith("ifsq-hf ")], proc.stdout

    # the README's folders, as `make demo` writes them (tiny models; the snippet only needs the layout)
    work = tmp_path / "user"
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(work / "outputs" / "tokenizer_ifsq")
    dit_folder(work / "outputs" / "dit", LABELS)
    llamagen_folder(work / "outputs" / "llamagen", LABELS)

    readme = (REPO / "README.md").read_text()
    use = readme[readme.index("## Use\n") :]
    snippet = re.search(r"```python\n(.*?)```", use, re.S).group(1)
    probe = (
        "import sys, ifsq_hf\n"
        f"assert ifsq_hf.__file__.startswith({str(venv)!r}), ifsq_hf.__file__\n"
        # the repository's sources are not importable (its .venv may live inside the clone, as in CI)
        f"assert not any(p.rstrip('/') == {str(REPO)!r} or p.startswith({str(REPO / 'src')!r}) for p in sys.path), sys.path\n"
        "print('FROM', ifsq_hf.__file__)\n"
    )
    out = run([str(python), "-I", "-c", probe + snippet + "\nprint('SNIPPET OK', len(samples))"], cwd=work, env=env)
    assert "SNIPPET OK 2" in out and "FROM " + str(venv) in out
    assert "usage: ifsq-hf" in run([str(venv / "bin" / "ifsq-hf"), "--help"], cwd=work, env=env)
