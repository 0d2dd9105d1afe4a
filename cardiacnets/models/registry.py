"""A registry of model builders, in the style of timm's ``register_model``.

A builder is registered under a name with the config dataclass it takes and
its default values; `create_model` applies keyword overrides (unknown keys are
an error, like every config in cardiacnets) and builds the model.

The registry is filled by the packages that define its entries, when they are
imported: ``cardiacnets.models`` (its ``__init__`` imports `zoo` and
`segmenter`: the ECG and CMR encoders, their pretraining models, the alignment
model and the segmenter) and ``cardiacnets.generation`` (its ``__init__``
imports the frame autoencoder, the cine denoiser and the anatomy-first
generator's denoisers). A lookup never imports a package itself (the registry
sits below ``generation`` in the layers of ``docs/architecture.md``); whoever
builds a generation model has imported ``cardiacnets.generation`` already.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from cardiacnets.config import from_dict, to_dict
from cardiacnets.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class _Entry:
    name: str
    config_cls: type
    defaults: dict
    build: Callable[[Any], Any]
    description: str


_REGISTRY: dict[str, _Entry] = {}


def register_model(name: str, config_cls: type, build: Callable[[Any], Any], description: str = "", **defaults) -> None:
    """Register ``build(config)`` under ``name`` with these config defaults."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    from_dict(config_cls, defaults)  # defaults must be valid
    _REGISTRY[name] = _Entry(name, config_cls, dict(defaults), build, description)


#: The packages whose import registers models (named in the error for an unknown model).
REGISTERING_PACKAGES = ("cardiacnets.models", "cardiacnets.generation")


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted; ``pattern`` is an fnmatch filter (``"ecg_*"``)."""
    import fnmatch

    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_model_config(name: str, **overrides):
    """The config dataclass a model would be built from."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(sorted(_REGISTRY))} (models register "
                          f"when their package is imported: {', '.join(REGISTERING_PACKAGES)})")
    entry = _REGISTRY[name]
    values = {**entry.defaults, **overrides}
    return from_dict(entry.config_cls, values, where=name)


def create_model(name: str, **overrides):
    """Build a registered model.

    Args:
        name: registered name (see `list_models`).
        **overrides: config fields to change (``depth=2``); unknown ones raise `ConfigError`.

    Returns:
        The model (a ``torch.nn.Module`` carrying its config as ``.config``).
    """
    config = get_model_config(name, **overrides)
    model = _REGISTRY[name].build(config)
    return model


def model_config_dict(name: str, **overrides) -> dict:
    return to_dict(get_model_config(name, **overrides))
