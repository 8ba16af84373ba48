"""The layer map of docs/architecture.md, enforced: which module may import which (parsed from the source, deferred
imports included), no import cycles, and a core that loads and samples without the training stack."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ifsq_hf

PACKAGE_DIR = Path(ifsq_hf.__file__).parent
SRC = PACKAGE_DIR.parent

# Layer of every module, by the longest matching dotted prefix. A new module must be placed here (and in the doc).
LAYERS = {
    "ifsq_hf": "core",
    "ifsq_hf.utils": "core",
    "ifsq_hf.quantization": "core",
    "ifsq_hf.schedulers": "core",
    "ifsq_hf.models": "core",
    "ifsq_hf.pipelines": "core",
    "ifsq_hf.data": "data",
    "ifsq_hf.metrics": "metrics",
    "ifsq_hf.evaluation": "metrics",
    "ifsq_hf.analysis": "metrics",
    "ifsq_hf.training": "training",
    "ifsq_hf.hub": "app",
    "ifsq_hf.convert": "app",
    "ifsq_hf.cli": "app",
    "ifsq_hf.benchmark": "app",
    "ifsq_hf.generator_fid": "app",
}
# What each layer may import from the package (its own layer included).
MAY_IMPORT = {
    "core": {"core"},
    "data": {"core", "data"},
    "metrics": {"core", "data", "metrics"},
    "training": {"core", "data", "metrics", "training"},
    "app": {"core", "data", "metrics", "training", "app"},
}
# Inside the core: the order in which its parts may import each other.
CORE_MAY_IMPORT = {
    "ifsq_hf.utils": {"ifsq_hf.utils"},
    "ifsq_hf.quantization": {"ifsq_hf.utils"},
    "ifsq_hf.schedulers": {"ifsq_hf.utils", "ifsq_hf.schedulers"},
    "ifsq_hf.models": {"ifsq_hf.utils", "ifsq_hf.quantization", "ifsq_hf.models"},
    "ifsq_hf.pipelines": {"ifsq_hf.utils", "ifsq_hf.schedulers", "ifsq_hf.models", "ifsq_hf.pipelines"},
}
# Third-party packages the core may import; anything else belongs behind an extra, outside the core.
CORE_THIRD_PARTY = {"torch", "diffusers", "transformers", "huggingface_hub", "safetensors", "numpy", "PIL"}
# Never loaded by `import ifsq_hf`, loading a saved pipeline/model and sampling.
NEVER_IN_CORE_RUN = [
    "datasets",
    "evaluate",
    "tensorboard",
    "torch.utils.tensorboard",
    "ifsq_hf.training",
    "ifsq_hf.metrics",
    "ifsq_hf.data",
    "ifsq_hf.hub",
    "ifsq_hf.convert",
    "ifsq_hf.evaluation",
]
# Optional packages that the pinned diffusers/transformers import themselves when installed (diffusers.hooks pulls
# accelerate and peft, transformers.modeling_utils pulls scipy): allowed only if the host libraries alone load them.
HOST_MAY_LOAD = ["accelerate", "scipy", "peft"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imports_in(source: str, name: str, is_package: bool = False) -> set[str]:
    """Absolute names of everything module ``name`` imports (top-level, deferred and TYPE_CHECKING imports)."""
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module
            for alias in node.names:  # `from pkg import submodule` is an import of the submodule
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return found


def imports_of(name: str) -> set[str]:
    path = MODULES[name]
    return imports_in(path.read_text(), name, path.name == "__init__.py")


def layer_of(name: str) -> str:
    matches = [prefix for prefix in LAYERS if name == prefix or name.startswith(prefix + ".")]
    assert matches, f"{name} has no layer: add it to LAYERS here and to docs/architecture.md"
    return LAYERS[max(matches, key=len)]


def core_part(name: str) -> str | None:
    return next((p for p in CORE_MAY_IMPORT if name == p or name.startswith(p + ".")), None)


def violations(name: str, targets: set[str]) -> list[str]:
    """Imports of ``name`` that break the layer rules or bring a non-core package into the core."""
    bad = []
    layer = layer_of(name)
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for target in sorted(targets):
        top = target.split(".")[0]
        if top != "ifsq_hf":
            if layer == "core" and top not in stdlib | CORE_THIRD_PARTY:
                bad.append(f"{name} (core) imports {target}: the core may only use {sorted(CORE_THIRD_PARTY)}")
            continue
        if target == "ifsq_hf":
            continue
        if layer_of(target) not in MAY_IMPORT[layer]:
            bad.append(f"{name} ({layer}) imports {target} ({layer_of(target)})")
        part, target_part = core_part(name), core_part(target)
        if part and target_part and target_part not in CORE_MAY_IMPORT[part]:
            bad.append(f"{name} ({part}) imports {target} ({target_part})")
    return bad


def test_every_module_has_a_layer_and_imports_only_what_its_layer_may():
    bad = [line for name in MODULES for line in violations(name, imports_of(name))]
    assert not bad, "layering violations (see docs/architecture.md):\n" + "\n".join(bad)


def test_the_layer_check_catches_violations():
    """The check above cannot pass vacuously."""
    probe = "ifsq_hf.models.probe"
    source = (
        "import accelerate\nfrom ..training.losses import TokenizerLoss\nfrom ..pipelines import iFSQDiTPipeline\n"
    )
    bad = violations(probe, imports_in(source, probe))
    assert len(bad) == 3, bad
    assert not violations(
        "ifsq_hf.training.probe", imports_in("import accelerate\nfrom ..models import X\n", "ifsq_hf.training.probe")
    )
    assert violations("ifsq_hf.metrics.probe", imports_in("from ..training import ema\n", "ifsq_hf.metrics.probe"))


def test_no_import_cycles():
    graph = {name: {t for t in imports_of(name) if t in MODULES and t != name} for name in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for name in sorted(MODULES):
        if name not in state and (cycle := visit(name, [name])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


CORE_RUN = """
import json, sys
import torch
import diffusers, transformers
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ModelMixin
from transformers import GenerationMixin, PreTrainedModel

HEAVY = {heavy!r}
host = sorted(m for m in HEAVY if m in sys.modules)

import ifsq_hf
after_import = sorted(m for m in {never!r} + HEAVY if m in sys.modules)

from ifsq_hf import LlamaGenForImageGeneration, iFSQDiTPipeline
pipe = iFSQDiTPipeline.from_pretrained({pipe_dir!r})
pipe.set_progress_bar_config(disable=True)
image = pipe([1], num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
model = LlamaGenForImageGeneration.from_pretrained({llamagen_dir!r})
tokens = model.generate(class_labels=torch.tensor([0]))
tokens = getattr(tokens, "sequences", tokens)
loaded = sorted(m for m in {never!r} + HEAVY if m in sys.modules)
print(json.dumps({{"host": host, "after_import": after_import, "after_sampling": loaded, "size": image.size,
                  "tokens": list(tokens.shape)}}))
"""


def run_core_in_fresh_process(tmp_path, heavy: list[str], prelude: str = "") -> dict:
    """Save a tiny pipeline and LlamaGen, then in a fresh process (after ``prelude``) import ifsq_hf, load both and
    sample; returns what :data:`CORE_RUN` reports (modules loaded at each stage, the image size, the tokens)."""
    import torch

    from ifsq_hf import LlamaGenConfig, LlamaGenForImageGeneration, iFSQAutoencoder, iFSQDiTPipeline
    from ifsq_hf.models.transformer_dit import LightningDiTTransformer2DModel

    torch.manual_seed(0)
    pipe = iFSQDiTPipeline(
        LightningDiTTransformer2DModel.from_preset("tiny"), iFSQAutoencoder.from_preset("test_f4_d4")
    )
    pipe.save_pretrained(tmp_path / "pipe")
    LlamaGenForImageGeneration(LlamaGenConfig.from_preset("tiny")).save_pretrained(tmp_path / "llamagen")
    script = prelude + CORE_RUN.format(
        heavy=heavy, never=NEVER_IN_CORE_RUN, pipe_dir=str(tmp_path / "pipe"), llamagen_dir=str(tmp_path / "llamagen")
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["size"] == [16, 16] and result["tokens"][0] == 1
    return result


@pytest.mark.slow
def test_core_loads_and_samples_without_the_training_stack(tmp_path):
    """Fresh process: `import ifsq_hf`, load a saved pipeline and a saved LlamaGen, sample; no training, metrics,
    datasets, evaluate or tensorboard module is loaded, and no optional package beyond what diffusers and
    transformers load themselves."""
    result = run_core_in_fresh_process(tmp_path, HOST_MAY_LOAD)
    for stage in ("after_import", "after_sampling"):
        never = [m for m in result[stage] if m in NEVER_IN_CORE_RUN]
        assert not never, f"{stage}: the core loaded {never}"
        extra = sorted(set(result[stage]) - set(result["host"]))
        assert not extra, f"{stage}: ifsq_hf loaded {extra}, which diffusers/transformers alone do not"


# What `pip install ifsq-hf` without extras leaves out: the core must load and sample without any of it.
OPTIONAL_PACKAGES = ["accelerate", "scipy", "peft", "datasets", "evaluate", "tensorboard", "matplotlib", "skimage"]
BLOCK_OPTIONAL = """
import sys
for name in {optional!r}:
    sys.modules[name] = None  # `import name` raises ImportError; importlib.util.find_spec(name) is None
"""


@pytest.mark.slow
def test_core_needs_none_of_the_optional_packages(tmp_path):
    """Fresh process in which accelerate, scipy, peft, datasets, evaluate, tensorboard, matplotlib and scikit-image
    cannot be imported (as for a plain `pip install ifsq-hf`): import, load a saved pipeline and LlamaGen, sample."""
    run_core_in_fresh_process(tmp_path, [], prelude=BLOCK_OPTIONAL.format(optional=OPTIONAL_PACKAGES))


def test_docs_map_every_top_level_place():
    """docs/architecture.md and the README's Design section name every module and package of src/ifsq_hf."""
    root = SRC.parent
    design = (root / "README.md").read_text().split("## Design", 1)[1].split("\n## ", 1)[0]
    architecture = (root / "docs" / "architecture.md").read_text()
    places = [
        f"{p.name}/" if p.is_dir() else p.name
        for p in PACKAGE_DIR.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")
    ]
    for text, where in ((design, "README.md ## Design"), (architecture, "docs/architecture.md")):
        missing = [place for place in places if f"`{place}" not in text and f" {place}" not in text]
        assert not missing, f"{where} does not mention {missing}"
