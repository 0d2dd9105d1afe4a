"""Tests of the torch data pipeline: tensors and keys, demographics, augmentation seeding, samplers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cardiacnets.data.store import DATASET_YAML, MANIFEST, ArraySpec, TrainingSet, create_arrays, open_arrays
from cardiacnets.data.torch_data import (
    CardiacTorchDataset, DemographicsNormalizer, EpochBatchSampler, batches_per_epoch,
    collate_samples, make_loader, sample_seed, shard_batches,
)
from cardiacnets.data.transforms import AugmentConfig
from cardiacnets.errors import InputError

N, T = 10, 200


def make_set(root, n: int = N) -> None:
    """A hand-made training set: row i's ECG is i + lead/100 mV, its cine is i/100 everywhere."""
    specs = [ArraySpec("ecg", (12, T), "float16"), ArraySpec("ecg_lead_mask", (12,), "bool"),
             ArraySpec("cmr_sa", (1, 3, 8, 8), "float16")]
    root.mkdir(parents=True, exist_ok=True)
    create_arrays(root, n, specs)
    arrays = open_arrays(root, specs, mode="r+")
    for i in range(n):
        arrays["ecg"][i] = i + np.arange(12)[:, None] / 100
        arrays["ecg_lead_mask"][i] = np.arange(12) != (i % 12)
        arrays["cmr_sa"][i] = i / 100
    for a in arrays.values():
        a.flush()
    manifest = pd.DataFrame({
        "row": range(n), "subject_id": [f"{1000 + i}" for i in range(n)],
        "patient_id": [f"{1000 + i}" for i in range(n)],
        "split": ["train"] * (n - 2) + ["val"] * 2, "has_ecg": True, "ecg_valid_start": 10, "ecg_valid_end": T - 10,
        "has_sa": [i != 1 for i in range(n)],
        "age_years": [50.0 + 2 * i for i in range(n)], "sex_male": [i % 2 for i in range(n)],
        "bmi": [np.nan if i == 3 else 20.0 + i for i in range(n)], "lvef_pct": [55.0 + i for i in range(n)],
    })
    manifest.to_csv(root / MANIFEST, index=False)
    info = {"arrays": [{"name": s.name, "row_shape": list(s.row_shape), "dtype": s.dtype} for s in specs]}
    (root / DATASET_YAML).write_text(yaml.safe_dump(info))


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("torch_data") / "set"
    make_set(root)
    return root


def test_sample_keys_dtypes_and_values(tiny_set):
    ts = TrainingSet(tiny_set, split="train", targets=("lvef_pct",))
    norm = DemographicsNormalizer.fit(ts.manifest, ("age_years", "sex_male", "bmi"))
    sample = CardiacTorchDataset(ts, norm)[4]
    assert sample["index"] == 4 and sample["subject_id"] == "1004"
    assert sample["ecg"].dtype == torch.float32 and sample["ecg"].shape == (12, T)
    torch.testing.assert_close(sample["ecg"][:, 0], 4 + torch.arange(12) / 100, atol=2e-3, rtol=0)
    assert sample["ecg_lead_mask"].dtype == torch.bool and not sample["ecg_lead_mask"][4]
    assert sample["ecg_sample_mask"].sum() == T - 20 and not sample["ecg_sample_mask"][0]
    assert sample["cmr_sa"].shape == (1, 3, 8, 8) and sample["has_sa"].item() is True
    assert sample["targets"]["lvef_pct"].item() == 59.0
    assert sample["demographics"].shape == (3,) and sample["demographics_mask"].all()


def test_demographics_normalisation_hand_computed(tiny_set):
    ts = TrainingSet(tiny_set, split="train")
    norm = DemographicsNormalizer.fit(ts.manifest, ("age_years", "sex_male", "bmi"))
    ages = 50.0 + 2 * np.arange(8)
    bmis = np.array([20.0 + i for i in range(8) if i != 3])  # subject 3 has no BMI
    assert norm.mean == pytest.approx((ages.mean(), 0.5, bmis.mean()))
    assert norm.std == pytest.approx((ages.std(), 0.5, bmis.std()))
    sample = CardiacTorchDataset(ts, norm)[3]
    expected_age = (56.0 - ages.mean()) / ages.std()
    assert sample["demographics"][0].item() == pytest.approx(expected_age, rel=1e-6)
    assert sample["demographics"][1].item() == pytest.approx((1 - 0.5) / 0.5)
    assert sample["demographics"][2].item() == 0.0 and sample["demographics_mask"].tolist() == [True, True, False]


def test_demographics_save_load_and_errors(tiny_set, tmp_path):
    ts = TrainingSet(tiny_set, split="train")
    norm = DemographicsNormalizer.fit(ts.manifest, ("age_years", "bmi"))
    norm.save(tmp_path / "demographics.json")
    assert DemographicsNormalizer.load(tmp_path / "demographics.json") == norm
    (tmp_path / "bad.json").write_text("{\"columns\": [\"a\"]}")
    with pytest.raises(InputError, match="bad.json.*not a demographics normaliser"):
        DemographicsNormalizer.load(tmp_path / "bad.json")
    with pytest.raises(InputError, match="manifest.csv: manifest has no demographic column 'height'"):
        DemographicsNormalizer.fit(ts.manifest, ("height",), tiny_set / "manifest.csv")
    empty = ts.manifest.assign(bmi=np.nan)
    with pytest.raises(InputError, match="'bmi' has no value in the training split"):
        DemographicsNormalizer.fit(empty, ("bmi",))


def test_collate_and_loader(tiny_set):
    ts = TrainingSet(tiny_set, split="train", targets=("lvef_pct",))
    ds = CardiacTorchDataset(ts, None)
    batch = collate_samples([ds[0], ds[2]])
    assert batch["ecg"].shape == (2, 12, T) and batch["cmr_sa"].shape == (2, 1, 3, 8, 8)
    assert batch["subject_id"] == ["1000", "1002"] and batch["index"].tolist() == [0, 2]
    assert batch["targets"]["lvef_pct"].tolist() == [55.0, 57.0]
    assert "demographics" not in batch
    loader = make_loader(ds, EpochBatchSampler(len(ds), 3, seed=1), workers=0)
    seen = [b["index"].tolist() for b in loader]
    assert len(seen) == 2 and all(len(s) == 3 for s in seen)


def test_augmentation_seeded_per_sample_and_epoch(tiny_set):
    ts = TrainingSet(tiny_set, split="train")
    aug = AugmentConfig(prob=1.0, ecg_amplitude_scale=0.2, ecg_noise_std_mV=0.05, cmr_gamma=0.3, cmr_shift_px=2)
    ds = CardiacTorchDataset(ts, None, aug, seed=3)
    plain = CardiacTorchDataset(ts, None)[5]
    a, b, other_epoch = ds[(0, 5)], ds[(0, 5)], ds[(1, 5)]
    assert torch.equal(a["ecg"], b["ecg"]) and torch.equal(a["cmr_sa"], b["cmr_sa"])
    assert not torch.equal(a["ecg"], other_epoch["ecg"])
    assert not torch.equal(a["ecg"], plain["ecg"])
    assert a["ecg"].dtype == torch.float32 and a["cmr_sa"].shape == plain["cmr_sa"].shape
    assert float(a["cmr_sa"].min()) >= 0.0 and float(a["cmr_sa"].max()) <= 1.0
    assert type(a["ecg"]) is torch.Tensor  # plain tensors, not MONAI MetaTensors
    assert sample_seed(3, 0, 5) == sample_seed(3, 0, 5) != sample_seed(3, 1, 5)


def test_unknown_view_is_an_input_error(tiny_set):
    with pytest.raises(InputError, match="no CMR view"):
        CardiacTorchDataset(TrainingSet(tiny_set), None, views=["la_4ch"])


def test_epoch_sampler_order_sharding_and_resume():
    full = list(EpochBatchSampler(10, 2, seed=0, epoch=1))
    assert len(full) == batches_per_epoch(10, 2) == 5
    indices = [i for batch in full for _, i in batch]
    assert sorted(indices) == list(range(10))
    assert indices == np.random.default_rng([0, 1]).permutation(10).tolist()
    assert all(e == 1 for batch in full for e, _ in batch)
    assert [i for b in EpochBatchSampler(10, 2, seed=0, epoch=2) for _, i in b] != indices
    # Resuming at batch 3 yields exactly the rest of the epoch.
    assert list(EpochBatchSampler(10, 2, seed=0, epoch=1, start_batch=3)) == full[3:]
    # Two processes split each global batch of 2 x 2 = 4; the incomplete last one (2 samples) is dropped.
    r0 = list(EpochBatchSampler(10, 2, seed=0, epoch=1, num_replicas=2, rank=0))
    r1 = list(EpochBatchSampler(10, 2, seed=0, epoch=1, num_replicas=2, rank=1))
    assert len(r0) == len(r1) == batches_per_epoch(10, 2, 2) == 2
    interleaved = [i for b0, b1 in zip(r0, r1) for i in [*b0, *b1]]
    assert [i for _, i in interleaved] == indices[:8]
    assert len(EpochBatchSampler(10, 2, max_batches=3)) == 3


def test_shard_batches_cover_every_sample_once():
    shards = [shard_batches(11, 4, 3, r) for r in range(3)]
    flat = [i for shard in shards for batch in shard for i in batch]
    assert flat == list(range(11))
    assert shards[0] == [[0, 1, 2]] and shards[2] == [[7, 8, 9, 10]]
