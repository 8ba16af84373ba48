"""Check LightningDiTTransformer2DModel against the official iFSQ ``dit/models/dit.py`` on random weights.

Needs a checkout of Tencent-Hunyuan/iFSQ (and ``einops``); timm's ``PatchEmbed``/``Mlp`` are replaced by
equivalent stand-ins because timm does not import next to a CPU-only torch, and ``torch.compile`` decorators are
disabled. Converts the official state dict with ``convert_official_dit_state_dict`` and prints the largest
difference of the velocity and of the REPA features (0.0 = bit-identical).

    python benchmarks/parity_official_dit.py /path/to/iFSQ
"""

from __future__ import annotations

import sys
import types

import torch
import torch.nn as nn

from ifsq_hf.convert.dit import convert_official_dit_state_dict
from ifsq_hf.models.transformer_dit import LightningDiTTransformer2DModel


class _PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim, bias=True):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.patch_size = (patch_size, patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, patch_size, bias=bias)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class _Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, act_layer, drop=0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def load_official_dit(repo: str):
    vit = types.ModuleType("timm.models.vision_transformer")
    vit.PatchEmbed, vit.Mlp = _PatchEmbed, _Mlp
    for name, module in {
        "timm": types.ModuleType("timm"),
        "timm.models": types.ModuleType("timm.models"),
        "timm.models.vision_transformer": vit,
    }.items():
        sys.modules.setdefault(name, module)
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    sys.path.insert(0, f"{repo}/dit")
    from models.dit import DiT

    return DiT


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    official_dit = load_official_dit(sys.argv[1])
    torch.manual_seed(0)
    cases = [
        ({"use_qknorm": True, "use_swiglu": True, "use_rope": True, "use_rmsnorm": True}, 1),
        ({"use_qknorm": True, "use_swiglu": True, "use_rope": True, "use_rmsnorm": True}, 2),
        ({"use_qknorm": True, "use_swiglu": False, "use_rope": False, "use_rmsnorm": False}, 2),
    ]
    for flags, patch in cases:
        off = official_dit(
            input_size=8, patch_size=patch, in_channels=4, hidden_size=64, depth=3, num_heads=4, num_classes=10,
            z_dims=[24], encoder_depth=2, projector_dim=32, **flags,
        ).eval()  # fmt: skip
        with torch.no_grad():  # perturb: with adaLN-Zero's zero init every output would be 0
            for p in off.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
        ours = LightningDiTTransformer2DModel(
            sample_size=8, patch_size=patch, in_channels=4, hidden_size=64, num_layers=3, num_attention_heads=4,
            num_classes=10, repa_feature_dim=24, repa_depth=2, repa_hidden_dim=32, use_qk_norm=flags["use_qknorm"],
            use_swiglu=flags["use_swiglu"], use_rope=flags["use_rope"], use_rmsnorm=flags["use_rmsnorm"],
        ).eval()  # fmt: skip
        state = off.state_dict()
        ours.load_state_dict(convert_official_dit_state_dict(state), strict=True)
        x, t, y = torch.randn(3, 4, 8, 8), torch.rand(3), torch.tensor([0, 5, 10])
        with torch.no_grad():
            v_off, zs = off(x, t, y)
            out = ours(x, t, y, return_repa_features=True)
        print(
            f"{flags} patch {patch}: max|dv| {(v_off - out.sample).abs().max().item():.3g}, "
            f"max|dz| {(zs[0] - out.repa_features).abs().max().item():.3g}, "
            f"max|d pos_embed| {(ours.pos_embed - state['pos_embed']).abs().max().item():.3g}"
        )


if __name__ == "__main__":
    main()
