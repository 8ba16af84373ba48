"""Saved folders and Hub repos load with the generic entry points a diffusers / transformers user types.

Folders are built the way the training scripts write them (``examples/train_dit.py``: a pipeline of the EMA
transformer, the tokenizer and a fresh scheduler, then ``finish_run``; ``examples/train_llamagen_repa.py``: the model
plus its tokenizer in ``tokenizer/``), and every load runs in a fresh process, as a new user's would.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from ifsq_hf import (
    LightningDiTTransformer2DModel,
    LlamaGenConfig,
    LlamaGenForImageGeneration,
    iFSQAutoencoder,
    iFSQDiTPipeline,
)
from ifsq_hf.hub import save_model_card, write_run_metadata

SRC = Path(__file__).resolve().parents[1] / "src"
ID2LABEL = {0: "cat", 1: "dog", 2: "owl"}
# In the "no ifsq_hf" processes the package is made unimportable, so the code must come from the folder itself.
BLOCK_IFSQ_HF = "import sys; sys.modules['ifsq_hf'] = None\n"


def run_python(code: str, env: dict, expect_ok: bool = True) -> str:
    env = {**env, "PYTHONPATH": os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )
    assert (proc.returncode == 0) == expect_ok, proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def offline_env(home: Path) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home)}


def dit_folder(folder: Path, id2label: dict = ID2LABEL) -> Path:
    """As ``examples/train_dit.py`` saves: ``make_pipeline(final, vae, id2label).save_pretrained`` + the card."""
    torch.manual_seed(0)
    vae = iFSQAutoencoder.from_preset("test_f4_d4")
    transformer = LightningDiTTransformer2DModel.from_preset("tiny", sample_size=4, in_channels=4, num_classes=3)
    pipe = iFSQDiTPipeline(
        transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(), id2label=id2label
    )
    pipe.save_pretrained(folder)
    write_run_metadata(folder, {"max_train_steps": 2}, {})
    save_model_card(folder)
    return folder


def llamagen_folder(folder: Path, id2label: dict = ID2LABEL) -> Path:
    """As ``examples/train_llamagen_repa.py`` saves: the model, then its tokenizer in ``tokenizer/``, + the card."""
    torch.manual_seed(0)
    config = LlamaGenConfig.from_preset("tiny", vocab_size=17**4, num_classes=3, image_token_size=4, id2label=id2label)
    LlamaGenForImageGeneration(config).save_pretrained(folder)
    iFSQAutoencoder.from_preset("test_f4_d4").save_pretrained(folder / "tokenizer")
    write_run_metadata(folder, {"max_train_steps": 2}, {})
    save_model_card(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("generic")
    return {"dit": dit_folder(root / "dit"), "llamagen": llamagen_folder(root / "llamagen")}


def dit_reference(folder: Path) -> float:
    pipe = iFSQDiTPipeline.from_pretrained(folder)
    images = pipe(class_labels=["cat", 2], num_inference_steps=2, guidance_scale=2.0, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    return float(images.sum())


DIT_GENERIC = """
import sys
import torch
from diffusers import DiffusionPipeline

try:
    DiffusionPipeline.from_pretrained(SOURCE)
except ValueError as err:
    print("WITHOUT TRUST:", err)
assert "ifsq_hf" not in sys.modules
pipe = DiffusionPipeline.from_pretrained(SOURCE, trust_remote_code=True)
print("CLASS", type(pipe).__module__, type(pipe).__name__, type(pipe.vae).__name__, type(pipe.transformer).__name__)
images = pipe(class_labels=["cat", 2], num_inference_steps=2, guidance_scale=2.0, output_type="np",
              generator=torch.Generator().manual_seed(0)).images
print("SUM", float(images.sum()))
"""

LLAMAGEN_GENERIC = """
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

try:
    AutoModelForCausalLM.from_pretrained(SOURCE)
except ValueError as err:
    print("WITHOUT TRUST:", err)
config = AutoConfig.from_pretrained(SOURCE, trust_remote_code=True)
base = AutoModel.from_pretrained(SOURCE, trust_remote_code=True)
model = AutoModelForCausalLM.from_pretrained(SOURCE, trust_remote_code=True)
print("CLASSES", type(config).__name__, type(base).__name__, type(model).__name__, type(model).__module__)
tokens = model.generate(class_labels=torch.tensor([0, 2]), generator=torch.Generator().manual_seed(0))
print("TOKENS", tokens.flatten().tolist())
"""


def llamagen_reference(folder: Path) -> list[int]:
    model = LlamaGenForImageGeneration.from_pretrained(folder)
    return (
        model.generate(class_labels=torch.tensor([0, 2]), generator=torch.Generator().manual_seed(0))
        .flatten()
        .tolist()
    )


def check_dit_generic(out: str, reference: float) -> None:
    assert "WITHOUT TRUST:" in out and "trust_remote_code=True" in out
    assert (
        "CLASS ifsq_hf.pipelines.pipeline_ifsq_dit iFSQDiTPipeline iFSQAutoencoder LightningDiTTransformer2DModel"
        in out
    )
    assert float(out.split("SUM ")[1].split()[0]) == pytest.approx(reference, rel=1e-5, abs=1e-4)


def check_llamagen_generic(out: str, reference: list[int]) -> None:
    assert "WITHOUT TRUST:" in out and "trust_remote_code=True" in out
    classes = out.split("CLASSES ")[1].split()
    assert classes[:3] == ["LlamaGenConfig", "LlamaGenModel", "LlamaGenForImageGeneration"]
    assert classes[3].startswith("transformers_modules.")  # the code saved with the model, not ifsq_hf
    assert json.loads(out.split("TOKENS ")[1].splitlines()[0]) == reference


def test_saved_folders_carry_the_loading_metadata(folders):
    index = json.loads((folders["dit"] / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_ifsq_dit", "iFSQDiTPipeline"]
    assert index["vae"] == ["ifsq_hf", "iFSQAutoencoder"]
    assert index["transformer"] == ["ifsq_hf", "LightningDiTTransformer2DModel"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    for path in ("pipeline_ifsq_dit.py", "vae/ifsq_hf.py", "transformer/ifsq_hf.py"):
        assert "from ifsq_hf import" in (folders["dit"] / path).read_text()
    config = json.loads((folders["llamagen"] / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_llamagen.LlamaGenConfig",
        "AutoModel": "modeling_llamagen.LlamaGenModel",
        "AutoModelForCausalLM": "modeling_llamagen.LlamaGenForImageGeneration",
    }
    # shipped as remote code: the modeling file may import only the configuration file relatively
    modeling = (folders["llamagen"] / "modeling_llamagen.py").read_text()
    relative = {line.split()[1] for line in modeling.splitlines() if line.startswith("from .")}
    assert relative <= {".configuration_llamagen"}, relative


def test_own_class_and_diffusers_automodel_still_load(folders):
    from diffusers import AutoModel

    pipe = iFSQDiTPipeline.from_pretrained(folders["dit"])  # no trust_remote_code: it is the class itself
    assert isinstance(pipe.vae, iFSQAutoencoder) and pipe.id2label == ID2LABEL
    assert isinstance(AutoModel.from_pretrained(str(folders["dit"]), subfolder="vae"), iFSQAutoencoder)
    assert isinstance(
        AutoModel.from_pretrained(str(folders["dit"]), subfolder="transformer"), LightningDiTTransformer2DModel
    )
    # the pipeline saved again keeps the generic metadata
    assert isinstance(json.loads(pipe.to_json_string())["_class_name"], list)


@pytest.mark.slow
def test_diffusion_pipeline_loads_a_local_folder(folders, tmp_path):
    out = run_python(f"SOURCE = {str(folders['dit'])!r}\n" + DIT_GENERIC, offline_env(tmp_path))
    check_dit_generic(out, dit_reference(folders["dit"]))


@pytest.mark.slow
def test_auto_classes_load_llamagen_without_ifsq_hf(folders, tmp_path):
    code = BLOCK_IFSQ_HF + f"SOURCE = {str(folders['llamagen'])!r}\n" + LLAMAGEN_GENERIC
    check_llamagen_generic(run_python(code, offline_env(tmp_path)), llamagen_reference(folders["llamagen"]))


@pytest.mark.slow
def test_auto_classes_know_llamagen_once_ifsq_hf_is_imported(folders, tmp_path):
    out = run_python(
        f"""
        import ifsq_hf
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
        for auto in (AutoConfig, AutoModel, AutoModelForCausalLM):
            print(type(auto.from_pretrained({str(folders["llamagen"])!r})).__module__)
        """,
        offline_env(tmp_path),
    )
    assert out.count("ifsq_hf.models.llamagen.") == 3


@pytest.mark.slow
def test_generic_loading_from_the_hub(folders, fake_hub, tmp_path):
    env = fake_hub.env(str(tmp_path / "home"))
    pushes = "".join(f"push_folder_to_hub({str(folders[kind])!r}, 'tester/{kind}')\n" for kind in ("dit", "llamagen"))
    run_python("from ifsq_hf.hub import push_folder_to_hub\n" + pushes, env)  # as `--push_to_hub` uploads them
    files = fake_hub.files("tester/dit")
    assert {"pipeline_ifsq_dit.py", "vae/ifsq_hf.py", "transformer/ifsq_hf.py"} <= set(files)
    check_dit_generic(run_python("SOURCE = 'tester/dit'\n" + DIT_GENERIC, env), dit_reference(folders["dit"]))
    code = BLOCK_IFSQ_HF + "SOURCE = 'tester/llamagen'\n" + LLAMAGEN_GENERIC
    check_llamagen_generic(run_python(code, env), llamagen_reference(folders["llamagen"]))
