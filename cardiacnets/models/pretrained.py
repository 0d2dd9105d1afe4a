"""Save and load trained models by folder (``save_pretrained`` / ``from_pretrained``).

A folder holds ``config.json`` (the model's class name and its constructor
config) and ``model.safetensors`` (the weights). Loading reads tensors with
safetensors and builds the class from an allow-list of cardiacnets model
classes (`pretrained_class`, filled when the modules defining them are
imported: the ``cardiacnets.models`` package imports all of its own, and
``cardiacnets.heads.model`` adds `HeadsModel`): no pickled code is ever executed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cardiacnets.config import from_dict, to_dict
from cardiacnets.errors import InputError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_CLASSES: dict[str, type] = {}


def pretrained_class(cls: type) -> type:
    """Class decorator: allow `load_pretrained` to build this class by name."""
    _CLASSES[cls.__name__] = cls
    return cls


class PretrainedMixin:
    """Mixin for ``torch.nn.Module`` models with a dataclass ``config`` attribute.

    Subclasses set ``config_class`` and take the config as their only
    constructor argument.
    """

    config_class: type

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into `folder`."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"class": type(self).__name__, "config": to_dict(self.config)}
        (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        save_model(self, str(folder / WEIGHTS_NAME))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, strict: bool = True):
        """Build the model from `folder` and load its weights (CPU tensors)."""
        model = load_pretrained(folder, strict=strict)
        if not isinstance(model, cls):
            raise InputError(folder, f"holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def load_pretrained(folder: str | os.PathLike, strict: bool = True):
    """Build whichever registered model class `folder` holds and load its weights.

    Raises:
        InputError: missing or malformed files, unknown class, mismatching weights.
    """
    from safetensors.torch import load_model

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise InputError(folder, f"not a saved model (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
    try:
        meta = json.loads(config_path.read_text())
        class_name, config_data = meta["class"], meta["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(config_path, f"malformed model config ({err})") from None
    if class_name not in _CLASSES:
        raise InputError(config_path, f"unknown model class {class_name!r}")
    cls = _CLASSES[class_name]
    model = cls(from_dict(cls.config_class, config_data))
    try:
        missing, unexpected = load_model(model, str(weights_path), strict=strict)
    except (RuntimeError, OSError, ValueError) as err:
        raise InputError(weights_path, f"weights do not fit {class_name} ({err})") from None
    return model


def resolve_model_dir(run: str | os.PathLike) -> Path:
    """The saved-model folder of a run: ``RUN/model/`` or `run` itself when it is one.

    Raises:
        InputError: `run` does not exist or holds no saved model.
    """
    run = Path(run)
    if not run.exists():
        raise InputError(run, "no such training run or model folder")
    for candidate in (run / "model", run):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise InputError(run, f"not a training run or saved model (no model/{CONFIG_NAME}); train one with 'cardiacnets train'")
