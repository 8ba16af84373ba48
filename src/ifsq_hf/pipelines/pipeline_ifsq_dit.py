"""Class-conditional image generation with a LightningDiT on iFSQ latents (flow matching, Euler ODE).

The time convention is the one of :mod:`ifsq_hf.schedulers.flow_matching` (``t = 0`` noise, ``t = 1`` data, the
model predicts ``data - noise``); the pipeline drives diffusers' ``FlowMatchEulerDiscreteScheduler`` with
``sigma = 1 - t`` and ``model_output = -velocity``, which reproduces the official Euler sampler step for step.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, ImagePipelineOutput
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
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
            ``timestep_shift`` instead). Optional in fact: with ``pipe.scheduler = None`` each call uses a default
            one.
        id2label: optional ``{class_id: "name, synonym, ..."}`` so classes can be asked for by name.

    Load from a folder or a Hub repo id with ``iFSQDiTPipeline.from_pretrained``, or with the generic
    ``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`` (see :mod:`.custom_pipeline`).
    """

    model_cpu_offload_seq = "transformer->vae"
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]
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
        self._guidance_scale, self._guidance_interval = 1.0, (0.0, 1.0)
        self._num_timesteps, self._interrupt = 0, False
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
        _check_pipeline_folder(path, kwargs)
        if "scheduler" not in kwargs and not os.path.isfile(os.path.join(path, "scheduler", "scheduler_config.json")):
            kwargs["scheduler"] = FlowMatchEulerDiscreteScheduler()  # folders saved without one use the default
        return super().from_pretrained(path, **kwargs)

    # ------------------------------------------------------------------ helpers
    @property
    def id2label(self) -> dict[int, str] | None:
        labels = self.config.id2label
        return None if labels is None else {int(k): v for k, v in labels.items()}

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell (the autoencoder's downsampling factor)."""
        return int(getattr(self.vae, "downsample_factor", 1))

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def guidance_interval(self) -> tuple[float, float]:
        return self._guidance_interval

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale != 1.0

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """Not available: the transformer runs ``torch.nn.functional.scaled_dot_product_attention``, which picks a
        memory-efficient kernel by itself. Raises instead of silently doing nothing."""
        if slice_size is None:  # ``disable_attention_slicing()``: nothing to undo
            return
        raise NotImplementedError(
            "iFSQDiTPipeline does not support attention slicing: its transformer uses PyTorch's "
            "scaled_dot_product_attention (memory-efficient kernels where available). To save memory, lower the "
            "batch size, use enable_model_cpu_offload(), or a lower-precision dtype."
        )

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

    def _flatten_labels(self, class_labels) -> list:
        if class_labels is None:
            raise ValueError(
                "class_labels is required: pass a class id, a class name, or a list of them "
                "(e.g. `pipe(207)`, `pipe([207, 360])`, `pipe(['golden retriever'])`)."
            )
        if isinstance(class_labels, (torch.Tensor, np.ndarray)):
            dtype = class_labels.dtype
            is_int = (
                not (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool)
                if isinstance(class_labels, torch.Tensor)
                else np.issubdtype(dtype, np.integer)
            )
            if not is_int:
                raise ValueError(
                    f"class_labels must hold integer class ids, got a {type(class_labels).__name__} of dtype {dtype}; "
                    "cast it with `.long()` / `.astype(int)` if the values are whole numbers."
                )
            return class_labels.reshape(-1).tolist()
        if isinstance(class_labels, (list, tuple)):
            return [item for entry in class_labels for item in self._flatten_labels(entry)]
        return [class_labels]

    def _class_ids(self, class_labels, device) -> torch.Tensor:
        """Class ids from ints, names, (nested) lists of them, or an integer tensor/array."""
        ids = []
        for label in self._flatten_labels(class_labels):
            if isinstance(label, str):
                ids.append(self.get_label_ids(label)[0])
            elif isinstance(label, (bool, np.bool_)):
                raise ValueError(f"class label {label!r} is a boolean; pass integer class ids or class names.")
            elif isinstance(label, (int, np.integer)):
                ids.append(int(label))
            elif isinstance(label, (float, np.floating)):
                raise ValueError(
                    f"class label {label!r} is a float; class labels are integer ids (or names), e.g. {int(label)}."
                )
            else:
                raise ValueError(
                    f"class label {label!r} of type {type(label).__name__} is not supported; pass integer class "
                    "ids or class names."
                )
        if not ids:
            raise ValueError("class_labels is empty; pass at least one class id or name.")
        num_classes = self.transformer.config.num_classes
        bad = [i for i in ids if not 0 <= i < num_classes]
        if bad:
            raise ValueError(f"class ids {bad} are out of range: this model has classes 0..{num_classes - 1}.")
        return torch.tensor(ids, dtype=torch.long, device=device)

    def _latent_scale_shift(self) -> tuple[float, float]:
        cfg = self.vae.config
        return float(getattr(cfg, "scaling_factor", 1.0) or 1.0), float(getattr(cfg, "shift_factor", 0.0) or 0.0)

    def check_inputs(
        self,
        num_inference_steps,
        guidance_scale,
        guidance_interval,
        timestep_shift,
        height,
        width,
        num_images_per_prompt,
        output_type,
        callback_on_step_end_tensor_inputs=None,
    ) -> None:
        """Validate the scalar arguments of ``__call__`` (class labels and latents are checked where they are
        converted) with errors that name the argument and the fix."""
        if not _is_int(num_inference_steps) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}.")
        if not _is_int(num_images_per_prompt) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1, got {num_images_per_prompt!r}.")
        if not _is_real(guidance_scale) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number (1 = no guidance), got {guidance_scale!r}.")
        if (
            isinstance(guidance_interval, (str, bytes))
            or not isinstance(guidance_interval, Sequence)
            or len(guidance_interval) != 2
            or not all(_is_real(v) and math.isfinite(v) for v in guidance_interval)
        ):
            raise ValueError(
                f"guidance_interval must be a pair (t_start, t_end) of numbers in [0, 1], got {guidance_interval!r}."
            )
        lo, hi = guidance_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError(f"guidance_interval must satisfy 0 <= start <= end <= 1, got {tuple(guidance_interval)}.")
        if not _is_real(timestep_shift) or not math.isfinite(timestep_shift) or timestep_shift <= 0:
            raise ValueError(f"timestep_shift must be a finite number > 0 (1 = uniform), got {timestep_shift!r}.")
        multiple = self.vae_scale_factor * self.transformer.config.patch_size
        for name, value in (("height", height), ("width", width)):
            if value is None:
                continue
            if not _is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer number of pixels, got {value!r}.")
            if value % multiple:
                lower, upper = max(multiple, value // multiple * multiple), (value // multiple + 1) * multiple
                raise ValueError(
                    f"{name}={value} is not a multiple of {multiple} (autoencoder factor {self.vae_scale_factor} x "
                    f"patch size {self.transformer.config.patch_size}); use e.g. {lower} or {upper}."
                )
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not available; choose from "
                f"{self._callback_tensor_inputs}."
            )

    def prepare_latents(
        self,
        batch_size: int,
        num_channels_latents: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise ``(batch, C, height / f, width / f)`` in the diffusion space, or the given ``latents``
        checked against that shape."""
        shape = (batch_size, num_channels_latents, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            if isinstance(generator, list) and len(generator) != batch_size:
                raise ValueError(
                    f"got {len(generator)} generators for a batch of {batch_size} images "
                    "(class labels x num_images_per_prompt); pass one generator or one per image."
                )
            return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != shape:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(
                f"latents must have shape {shape} (batch = class labels x num_images_per_prompt, channels, "
                f"height / {self.vae_scale_factor}, width / {self.vae_scale_factor}), got {got}."
            )
        return latents.to(device=device, dtype=dtype)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | Sequence | torch.Tensor | None = None,
        num_inference_steps: int = 250,
        guidance_scale: float = 1.0,
        guidance_interval: tuple[float, float] = (0.0, 1.0),
        timestep_shift: float = 1.0,
        height: int | None = None,
        width: int | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Generate ``num_images_per_prompt`` images per entry of ``class_labels``.

        Args:
            class_labels: a class id or name, or a (nested) list of them, or an integer tensor (names need
                ``id2label``).
            num_inference_steps: Euler steps from noise to data (official: 250).
            guidance_scale: classifier-free guidance ``v_u + s (v_c - v_u)`` on **all** latent channels;
                ``1`` disables it (one model call per step instead of two). The official iFSQ numbers use 1.
            guidance_interval: ``(t_start, t_end)`` in flow time (0 = noise, 1 = data): guidance only on steps
                whose current ``t`` lies inside. LightningDiT's ``cfg_interval_start=0.11`` is ``(0.11, 1.0)``.
            timestep_shift: official shift ``t -> s t / (1 + (s - 1) t)``; ``1`` = uniform steps, ``< 1`` puts
                more steps near the noise end (LightningDiT uses 0.3).
            height, width: output size in pixels, multiples of the autoencoder factor times the patch size
                (default: the transformer's ``sample_size`` latents).
            num_images_per_prompt: images per class label (consecutive in the output).
            generator: one torch generator, or one per image, for the initial noise.
            latents: initial noise ``(B, C, h, w)`` in the diffusion space, instead of drawing it.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` (images in ``[0, 1]``) or ``"latent"`` (diffusion-space
                latents, undecoded).
            return_dict: return an :class:`ImagePipelineOutput` (else a tuple).
            callback_on_step_end: ``fn(pipe, step, timestep, callback_kwargs) -> dict`` called after every step
                with the tensors named in ``callback_on_step_end_tensor_inputs``; a returned ``"latents"``
                replaces the current latents. Set ``pipe._interrupt = True`` inside it to stop early.
            callback_on_step_end_tensor_inputs: tensors passed to the callback (from ``_callback_tensor_inputs``).
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        if callback_on_step_end_tensor_inputs is None:
            callback_on_step_end_tensor_inputs = ["latents"]
        self.check_inputs(
            num_inference_steps,
            guidance_scale,
            guidance_interval,
            timestep_shift,
            height,
            width,
            num_images_per_prompt,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        scheduler = self.scheduler if self.scheduler is not None else FlowMatchEulerDiscreteScheduler()
        if getattr(scheduler.config, "use_dynamic_shifting", False):
            raise ValueError("dynamic shifting is not supported; build the scheduler with use_dynamic_shifting=False.")
        self._guidance_scale = float(guidance_scale)
        self._guidance_interval = (float(guidance_interval[0]), float(guidance_interval[1]))
        self._interrupt = False

        tcfg = self.transformer.config
        device = self._execution_device
        labels = self._class_ids(class_labels, device).repeat_interleave(num_images_per_prompt)
        batch = labels.shape[0]
        cells = tcfg.sample_size * self.vae_scale_factor
        height, width = height or cells, width or cells
        latents = self.prepare_latents(
            batch, tcfg.in_channels, height, width, self.transformer.dtype, device, generator, latents
        )

        sigmas = t_to_sigma(timestep_grid(num_inference_steps, timestep_shift))[:-1]
        scheduler.set_timesteps(sigmas=sigmas.tolist(), device=device)
        timesteps = scheduler.timesteps
        self._num_timesteps = len(timesteps)
        null = torch.full_like(labels, tcfg.num_classes)
        lo, hi = self._guidance_interval

        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, timestep in enumerate(timesteps):
                if self.interrupt:
                    break
                t = 1.0 - float(scheduler.sigmas[i])
                guide = self.do_classifier_free_guidance and lo <= t <= hi
                x_in = torch.cat([latents, latents]) if guide else latents
                y_in = torch.cat([labels, null]) if guide else labels
                t_in = torch.full((x_in.shape[0],), t, device=device, dtype=torch.float32)
                velocity = self.transformer(x_in, t_in, y_in).sample
                if guide:
                    v_cond, v_uncond = velocity.chunk(2)
                    velocity = classifier_free_guidance(v_cond, v_uncond, self._guidance_scale)
                latents = scheduler.step(velocity_to_scheduler_output(velocity), timestep, latents).prev_sample

                if callback_on_step_end is not None:
                    available = {"latents": latents}
                    callback_kwargs = {k: available[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, timestep, callback_kwargs) or {}
                    latents = callback_outputs.pop("latents", latents)
                progress_bar.update()

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


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


_EXPECTED_COMPONENTS = {"transformer": "LightningDiTTransformer2DModel", "vae": "iFSQAutoencoder"}


def _check_pipeline_folder(path: str, kwargs: dict) -> None:
    """Clear errors for folders that are not a saved iFSQDiTPipeline (instead of diffusers' errors about the
    root folder): a model folder passed as a pipeline, another pipeline, a missing or wrong component."""
    index_file = os.path.join(path, "model_index.json")
    if not os.path.isfile(index_file):
        hint = "save one with pipe.save_pretrained(folder)."
        config_file = os.path.join(path, "config.json")
        if os.path.isfile(config_file):
            kind = _class_name(config_file)
            if kind:
                hint = f"it holds a {kind} model config: load it with {kind}.from_pretrained({path!r})."
        raise ValueError(f"{path} is not a saved iFSQDiTPipeline (no model_index.json); {hint}")
    kind = _class_name(index_file)
    if kind not in (None, "iFSQDiTPipeline"):
        raise ValueError(f"{path} holds a {kind} pipeline (model_index.json), not an iFSQDiTPipeline.")
    for component, expected in _EXPECTED_COMPONENTS.items():
        if kwargs.get(component) is not None:
            continue  # passed by the caller
        config_file = os.path.join(path, component, "config.json")
        if not os.path.isfile(config_file):
            raise FileNotFoundError(
                f"{os.path.join(path, component)} is missing or has no config.json: a saved iFSQDiTPipeline needs "
                f"the {component!r} subfolder ({expected}); re-save the pipeline or pass {component}=... to "
                "from_pretrained."
            )
        found = _class_name(config_file)
        if found not in (None, expected):
            raise ValueError(
                f"{os.path.join(path, component)} holds a {found}, but iFSQDiTPipeline's {component} must be a "
                f"{expected}."
            )


def _class_name(config_file: str) -> str | None:
    try:
        with open(config_file, encoding="utf-8") as f:
            value = json.load(f).get("_class_name")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"{config_file} is not a readable JSON config: {err}") from err
    return value if isinstance(value, str) else None
