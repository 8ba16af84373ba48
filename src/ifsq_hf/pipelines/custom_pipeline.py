"""Make saved pipelines load with diffusers' generic ``DiffusionPipeline.from_pretrained``.

diffusers resolves ``model_index.json`` by name: ``_class_name`` must be a class of the ``diffusers`` package unless
it is ``[module, class]`` with ``module.py`` next to it (a custom pipeline, loaded with ``trust_remote_code=True``),
and on the Hub every component's library must be ``diffusers``/``transformers`` or have ``<component>/<library>.py``.
So a folder saved by a pipeline with :class:`CustomPipelineMixin` holds, besides the usual files:

- ``model_index.json`` with ``"_class_name": ["pipeline_ifsq_dit", "iFSQDiTPipeline"]`` and this library's
  components as ``["ifsq_hf", "<class>"]`` (like ``["diffusers", "AutoencoderKL"]``);
- ``pipeline_ifsq_dit.py`` and ``<component>/ifsq_hf.py``: two-line modules that import the classes from the
  installed ``ifsq-hf`` package. The code itself is not copied: it uses the package's relative imports, and a
  copy would drift from the installed library.

The pipeline's own ``from_pretrained`` reads such folders without ``trust_remote_code`` (it already is the class).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import ClassVar

LIBRARY = "ifsq_hf"
DISTRIBUTION = "ifsq-hf"

_SHIM = '''"""Written by ifsq-hf's `save_pretrained`: diffusers' generic loader imports {what} from here.

The code is not in this repository: it is the installed `{distribution}` package (`pip install {distribution}`), e.g.
    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(<this folder or repo id>, trust_remote_code=True)
"""

try:
    from {library} import {names}
except ModuleNotFoundError as err:
    if err.name != "{library}":
        raise
    raise ImportError("this model needs the `{distribution}` library: pip install {distribution}") from err

__all__ = [{quoted}]
'''


def _shim_source(names: list[str], what: str) -> str:
    return _SHIM.format(
        what=what,
        library=LIBRARY,
        distribution=DISTRIBUTION,
        names=", ".join(names),
        quoted=", ".join(f'"{n}"' for n in names),
    )


def _library_class(name: str):
    """The class ``ifsq_hf.<name>`` (``None`` if the package exports no such name)."""
    return getattr(importlib.import_module(LIBRARY), name, None)


class CustomPipelineMixin:
    """Save a diffusers pipeline of this library so that ``DiffusionPipeline.from_pretrained`` loads it.

    Put it before ``DiffusionPipeline`` in the bases. It rewrites ``model_index.json`` on save (``to_json_string``),
    writes the import modules next to it (``save_config``, so ``push_to_hub=True`` uploads them too) and undoes the
    rewrite when the concrete class loads a folder (``load_config``).
    """

    #: file name (without ``.py``) of the module written next to ``model_index.json``
    custom_pipeline_module: ClassVar[str | None] = None

    @classmethod
    def _custom_module_name(cls) -> str:
        return cls.custom_pipeline_module or cls.__module__.rsplit(".", 1)[-1]

    def _library_components(self) -> dict[str, str]:
        """``{component name: class name}`` for the components that are classes exported by ``ifsq_hf``."""
        found = {}
        for name, value in self.config.items():
            if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
                library, class_name = value
                if library.split(".")[0] == LIBRARY and _library_class(class_name) is not None:
                    found[name] = class_name
        return found

    def to_json_string(self) -> str:
        config = json.loads(super().to_json_string())
        if _library_class(type(self).__name__) is type(self):
            config["_class_name"] = [self._custom_module_name(), type(self).__name__]
        for name, class_name in self._library_components().items():
            config[name] = [LIBRARY, class_name]
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> None:
        # Written before the config so that a push (which uploads the folder) includes them.
        if _library_class(type(self).__name__) is type(self):
            os.makedirs(save_directory, exist_ok=True)
            path = os.path.join(save_directory, f"{self._custom_module_name()}.py")
            with open(path, "w", encoding="utf-8") as f:
                f.write(_shim_source([type(self).__name__], "the pipeline class"))
        components = self._library_components()
        if components:
            # one identical module for every component: diffusers caches them all under the same module name
            source = _shim_source(sorted(set(components.values())), "the component classes")
            for name in components:
                os.makedirs(os.path.join(save_directory, name), exist_ok=True)
                with open(os.path.join(save_directory, name, f"{LIBRARY}.py"), "w", encoding="utf-8") as f:
                    f.write(source)
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        result = super().load_config(*args, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        if isinstance(config.get("_class_name"), (list, tuple)):
            # Loading with this very class: the module next to model_index.json (which would need
            # trust_remote_code) only points back here.
            config["_class_name"] = config["_class_name"][1]
        for name, value in list(config.items()):
            if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == LIBRARY:
                component_class = _library_class(value[1])
                if component_class is not None:
                    # the defining module, so diffusers imports the class rather than `<component>/ifsq_hf.py`
                    config[name] = [component_class.__module__, value[1]]
        return result
