"""Resumable training checkpoints that never execute pickled code when loaded.

A checkpoint is a folder ``RUN/checkpoints/step_XXXXXXXX`` holding:

    model.safetensors        weights of the trained module (safetensors)
    ema.safetensors          the EMA copy, when enabled
    optimizer.pt             optimiser state dict (tensors, numbers, lists only)
    scheduler.json           learning-rate scheduler state
    rng_rank<r>.safetensors  torch CPU/CUDA generator states of process r, with the
                             Python and NumPy states as JSON metadata
    trainer_state.json       step, epoch, validation bookkeeping, the resolved config

Accelerate's ``save_state``/``load_state`` pickle the optimiser and RNG states
and unpickle them with ``weights_only=False``, which runs whatever code a
tampered file carries; this module writes the same information as safetensors
and JSON, and reads ``optimizer.pt`` with ``torch.load(weights_only=True)``, whose
unpickler accepts tensors and plain containers only. A checkpoint folder is
written under a temporary name and renamed when complete, so a run killed
while saving leaves no half checkpoint behind.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from cardiacnets.errors import InputError

CHECKPOINTS = "checkpoints"
MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.json"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d{8})$")


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """The folder of the checkpoint after optimiser step `step`."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint, or ``None``."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int) -> None:
    """Delete all but the `keep_last` newest checkpoints (and leftovers of interrupted saves)."""
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old)
    root = Path(run_dir) / CHECKPOINTS
    for partial in root.glob("*.partial") if root.is_dir() else ():
        shutil.rmtree(partial, ignore_errors=True)


def partial_dir(final: Path) -> Path:
    """Where a checkpoint is written before it is renamed to `final`."""
    return final.with_name(final.name + ".partial")


# --- random states ---------------------------------------------------------------------------------------------

def save_rng_state(path: str | os.PathLike) -> None:
    """Write this process's Python, NumPy and torch (CPU and CUDA) random states."""
    from safetensors.torch import save_file

    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"])}}
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    metadata = {"python": json.dumps([py_version, list(py_state), py_gauss]), "numpy": json.dumps(np_state)}
    save_file(tensors, str(path), metadata=metadata)


def load_rng_state(path: str | os.PathLike) -> None:
    """Restore the random states written by `save_rng_state`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            tensors = {key: f.get_tensor(key) for key in f.keys()}
        py_version, py_state, py_gauss = json.loads(metadata["python"])
        np_state = json.loads(metadata["numpy"])
    except (OSError, KeyError, TypeError, ValueError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable random state ({err})") from None
    random.setstate((py_version, tuple(py_state), py_gauss))
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


# --- weights and optimiser ---------------------------------------------------------------------------------------

def save_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Write a module's state as safetensors (shared tensors handled by ``save_model``; channels-last
    weights are stored contiguous)."""
    from safetensors.torch import save_model

    save_model(module, str(path), force_contiguous=True)


def load_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load safetensors weights into `module` strictly.

    Raises:
        InputError: missing file or weights that do not fit the module.
    """
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint weights missing")
    try:
        load_model(module, str(path), strict=True)
    except (RuntimeError, OSError, ValueError) as err:
        raise InputError(path, f"weights do not fit the model ({err})") from None


def save_optimizer(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """Write the optimiser state dict (loadable with ``weights_only=True``)."""
    torch.save(optimizer.state_dict(), path)


def load_optimizer(optimizer: torch.optim.Optimizer, path: str | os.PathLike) -> None:
    """Load an optimiser state dict without executing pickled code.

    Raises:
        InputError: the file is missing, is not a plain state dict (for example a
            pickle that would run code: refused unread), or does not fit the optimiser.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "checkpoint optimizer state missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(path, "refused: not a plain tensor state dict; nothing pickled is executed "
                               f"({first_line})") from None
    try:
        optimizer.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(path, f"optimizer state does not fit the model's parameters ({err})") from None


def save_json(data: dict, path: str | os.PathLike) -> None:
    """Write JSON; non-JSON values are an internal error, never silently converted."""
    Path(path).write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def load_json(path: str | os.PathLike) -> dict:
    """Read a JSON object, with errors naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"unreadable checkpoint file ({err})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def scheduler_state(scheduler) -> dict:
    """A learning-rate scheduler's state as JSON-ready data (its lambdas are rebuilt from the config)."""
    state = dict(scheduler.state_dict())
    state.pop("lr_lambdas", None)
    return {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}


def load_scheduler(scheduler, path: str | os.PathLike) -> None:
    """Restore a scheduler from `scheduler_state` JSON."""
    state = load_json(path)
    if hasattr(scheduler, "lr_lambdas"):  # LambdaLR: plain functions are not state, rebuilt from the config
        state["lr_lambdas"] = [None] * len(scheduler.lr_lambdas)
    try:
        scheduler.load_state_dict(state)
    except (KeyError, ValueError, TypeError) as err:
        raise InputError(path, f"scheduler state does not fit ({err})") from None
