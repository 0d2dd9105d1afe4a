"""Patient-level train/validation/test splits.

A subject's split is a pure function of its patient id and a seed (a hash,
not a shuffle), so it never changes when subjects are added, records of one
patient never straddle splits, and every run and machine agrees. Data sets
with official folds (PTB-XL ``strat_fold``) use those instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cardiacnets.errors import ConfigError

SPLITS = ("train", "val", "test")


@dataclass
class SplitConfig:
    """Fractions of patients in validation and test (the rest train), and the hash seed."""

    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        if self.val_fraction < 0 or self.test_fraction < 0 or self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("split: val_fraction and test_fraction must be >= 0 and sum below 1")


def _unit_hash(patient_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(patient_id: object, config: SplitConfig) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a patient id (any printable value)."""
    u = _unit_hash(str(patient_id), config.seed)
    if u < config.test_fraction:
        return "test"
    if u < config.test_fraction + config.val_fraction:
        return "val"
    return "train"


def ptbxl_split(strat_fold: int) -> str:
    """PTB-XL's recommended split: folds 1-8 train, 9 validation, 10 test."""
    fold = int(strat_fold)
    if not 1 <= fold <= 10:
        raise ValueError(f"strat_fold {strat_fold} outside 1-10")
    return "test" if fold == 10 else "val" if fold == 9 else "train"
