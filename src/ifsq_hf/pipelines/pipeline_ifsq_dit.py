"""Class-conditional image generation with a LightningDiT on iFSQ latents (flow matching, Euler ODE).

The time convention is the one of :mod:`ifsq_hf.schedulers.flow_matching` (``t = 0`` noise, ``t = 1`` data, the
model predicts ``data - noise``); the pipeline drives diffusers' ``FlowMatchEulerDiscreteScheduler`` with
``sigma = 1 - t`` and ``model_output = -velocity``, which reproduces the official Euler sampler step for step.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ImagePipelineOutput
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from ..models.autoencoder_ifsq import iFSQAutoencoder
from ..models.transformer_dit import LightningDiTTransformer2DModel
from ..schedulers.flow_matching import (
    classifier_free_guidance,
    t_to_sigma,
    timestep_grid,
    velocity_to_scheduler_output,
)
from .custom_pipeline import CustomPipelineMixin

__all__ = ["iFSQDiTPipeline"]


class iFSQDiTPipeline(CustomPipelineMixin, DiffusionPipeline):
    """Sample images of given classes: flow-matching ODE in latent space, then the iFSQ decoder.

    Components:
        transformer: :class:`LightningDiTTransformer2DModel` (velocity model).
        vae: :class:`iFSQAutoencoder`; its ``scaling_factor``/``shift_factor`` map its latents to the diffusion
            space (``x = (z - shift) * scale``). Sampled latents are decoded as they are, without snapping them
            to the FSQ grid, like the official code.
        scheduler: ``FlowMatchEulerDiscreteScheduler`` (default: a fresh one; keep ``shift=1`` and use
            ``timestep_shift`` instead).
        id2label: optional ``{class_id: "name, synonym, ..."}`` so classes can be asked for by name.

    Load from a folder or a Hub repo id with ``iFSQDiTPipeline.from_pretrained``, or with the generic
    ``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`` (see :mod:`.custom_pipeline`).
    """

    model_cpu_offload_seq = "transformer->vae"
    # Optional in the signature (a fresh FlowMatchEulerDiscreteScheduler by default) but still saved and loaded.
    _optional_components: ClassVar[list[str]] = ["scheduler"]

    def __init__(
        self,
        transformer: LightningDiTTransformer2DModel,
        vae: iFSQAutoencoder,
        scheduler: FlowMatchEulerDiscreteScheduler | None = None,
        id2label: dict | None = None,
    ):
        super().__init__()
        if scheduler is None:
            scheduler = FlowMatchEulerDiscreteScheduler()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        if id2label is not None:
            id2label = {int(k): str(v) for k, v in id2label.items()}  # JSON round trips make keys strings
        self.register_to_config(id2label=id2label)
        self.image_processor = VaeImageProcessor(do_normalize=True)
        # name -> id; each comma-separated synonym is a name (as DiTPipeline does for ImageNet labels)
        self.labels: dict[str, int] = {}
        for idx, names in (id2label or {}).items():
            for name in names.split(","):
                self.labels[name.strip()] = idx

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> iFSQDiTPipeline:
        """Load from a local folder or a Hub repo id.

        diffusers' own downloader rejects components from third-party libraries, so a repo id is first fetched
        with ``huggingface_hub.snapshot_download`` (honouring ``revision``, ``token``, ``cache_dir``,
        ``local_files_only``, ``force_download`` and ``HF_HUB_OFFLINE``) and then loaded as a folder.
        """
        path = str(pretrained_model_name_or_path)
        if not os.path.isdir(path):
            from huggingface_hub import snapshot_download

            download_kwargs = {
                key: kwargs.pop(key)
                for key in ("revision", "token", "cache_dir", "local_files_only", "force_download", "proxies")
                if key in kwargs
            }
            path = snapshot_download(path, **download_kwargs)
        if "scheduler" not in kwargs and not os.path.isfile(os.path.join(path, "scheduler", "scheduler_config.json")):
            kwargs["scheduler"] = FlowMatchEulerDiscreteScheduler()  # folders saved without one use the default
        return super().from_pretrained(path, **kwargs)

    # ------------------------------------------------------------------ helpers
    @property
    def id2label(self) -> dict[int, str] | None:
        labels = self.config.id2label
        return None if labels is None else {int(k): v for k, v in labels.items()}

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """Class ids for class names (any comma-separated synonym from ``id2label``)."""
        names = [label] if isinstance(label, str) else list(label)
        if not self.labels:
            raise ValueError("this pipeline has no id2label mapping; pass integer class ids instead of names.")
        ids = []
        for name in names:
            if name not in self.labels:
                known = ", ".join(sorted(self.labels)[:10])
                raise ValueError(f"unknown class name {name!r}; known names include: {known}.")
            ids.append(self.labels[name])
        return ids

    def _class_ids(self, class_labels, device) -> torch.Tensor:
        if isinstance(class_labels, torch.Tensor):
            ids = class_labels.flatten().tolist()
        elif isinstance(class_labels, (int, str)):
            ids = [class_labels]
        else:
            ids = list(class_labels)
        if not ids:
            raise ValueError("class_labels is empty; pass at least one class id or name.")
        ids = [self.get_label_ids(i)[0] if isinstance(i, str) else int(i) for i in ids]
        num_classes = self.transformer.config.num_classes
        bad = [i for i in ids if not 0 <= i < num_classes]
        if bad:
            raise ValueError(f"class ids {bad} are out of range: this model has classes 0..{num_classes - 1}.")
        return torch.tensor(ids, dtype=torch.long, device=device)

    def _latent_scale_shift(self) -> tuple[float, float]:
        cfg = self.vae.config
        return float(getattr(cfg, "scaling_factor", 1.0) or 1.0), float(getattr(cfg, "shift_factor", 0.0) or 0.0)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str] | torch.Tensor,
        num_inference_steps: int = 250,
        guidance_scale: float = 1.0,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
        timestep_shift: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Generate one image per entry of ``class_labels``.

        Args:
            class_labels: class ids or names (names need ``id2label``).
            num_inference_steps: Euler steps from noise to data (official: 250).
            guidance_scale: classifier-free guidance ``v_u + s (v_c - v_u)`` on **all** latent channels;
                ``1`` disables it (one model call per step instead of two). The official iFSQ numbers use 1.
            guidance_interval: ``(t_start, t_end)`` in flow time (0 = noise, 1 = data): guidance only on steps
                whose current ``t`` lies inside. LightningDiT's ``cfg_interval_start=0.11`` is ``(0.11, 1.0)``.
            timestep_shift: official shift ``t -> s t / (1 + (s - 1) t)``; ``1`` = uniform steps, ``< 1`` puts
                more steps near the noise end (LightningDiT uses 0.3).
            height, width: output size in pixels (default: the transformer's ``sample_size`` latents).
            generator: torch generator(s) for the initial noise.
            latents: initial noise ``(B, C, h, w)`` in the diffusion space, instead of drawing it.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` (images in ``[0, 1]``) or ``"latent"`` (diffusion-space
                latents, undecoded).
        """
        tcfg = self.transformer.config
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}.")
        lo, hi = (float(v) for v in guidance_interval)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance_interval must satisfy 0 <= start <= end <= 1, got {guidance_interval}.")
        if getattr(self.scheduler.config, "use_dynamic_shifting", False):
            raise ValueError("dynamic shifting is not supported; build the scheduler with use_dynamic_shifting=False.")
        device = self._execution_device
        labels = self._class_ids(class_labels, device)
        batch = labels.shape[0]

        factor = getattr(self.vae, "downsample_factor", None)
        h = w = tcfg.sample_size
        if height is not None or width is not None:
            if factor is None:
                raise ValueError("height/width need a vae with a downsample_factor; pass latents instead.")
            h, w = (height or h * factor) // factor, (width or w * factor) // factor
        shape = (batch, tcfg.in_channels, h, w)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=self.transformer.dtype)
        else:
            if latents.ndim != 4 or latents.shape[0] != batch or latents.shape[1] != tcfg.in_channels:
                raise ValueError(
                    f"latents must have shape (batch={batch}, channels={tcfg.in_channels}, h, w), got "
                    f"{tuple(latents.shape)}."
                )
            latents = latents.to(device=device, dtype=self.transformer.dtype)

        sigmas = t_to_sigma(timestep_grid(num_inference_steps, timestep_shift))[:-1]
        self.scheduler.set_timesteps(sigmas=sigmas.tolist(), device=device)
        use_cfg = guidance_scale != 1.0
        null = torch.full_like(labels, tcfg.num_classes)

        for i, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            t = 1.0 - self.scheduler.sigmas[i].item()
            guide = use_cfg and lo <= t <= hi
            x_in = torch.cat([latents, latents]) if guide else latents
            y_in = torch.cat([labels, null]) if guide else labels
            t_in = torch.full((x_in.shape[0],), t, device=device, dtype=torch.float32)
            velocity = self.transformer(x_in, t_in, y_in).sample
            if guide:
                v_cond, v_uncond = velocity.chunk(2)
                velocity = classifier_free_guidance(v_cond, v_uncond, guidance_scale)
            latents = self.scheduler.step(velocity_to_scheduler_output(velocity), timestep, latents).prev_sample

        if output_type == "latent":
            images = latents
        else:
            scale, shift = self._latent_scale_shift()
            z = latents / scale + shift
            decoded = self.vae.decode(z.to(self.vae.dtype)).sample
            images = self.image_processor.postprocess(decoded.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
