"""Tests of the training-time augmentations: the per-sample config and the batch-level ECG transforms."""

from __future__ import annotations

import pytest
import torch

from cardiacnets.data.transforms import (
    AugmentConfig, ECGAugmentConfig, add_gaussian_noise, augment_ecg_view, random_amplitude_scale, random_lead_mask,
    random_time_shift,
)
from cardiacnets.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_augment_config_validation():
    with pytest.raises(ConfigError, match="augment.prob"):
        AugmentConfig(prob=1.5).validate()
    with pytest.raises(ConfigError, match="ecg_amplitude_scale must be below 1"):
        AugmentConfig(ecg_amplitude_scale=1.0).validate()
    assert not AugmentConfig().enabled


def test_random_lead_mask_draws():
    generator = torch.Generator().manual_seed(0)
    mask = random_lead_mask(500, generator, lead_drop_prob=0.9, subset_prob=0.0)
    assert mask.shape == (500, 12) and mask.dtype == torch.bool
    assert mask.any(dim=1).all()  # at least one lead per row
    assert 0.05 < mask.float().mean() < 0.2
    assert random_lead_mask(10, torch.Generator().manual_seed(0), 0.0, 0.0).all()
    views = random_lead_mask(300, torch.Generator().manual_seed(1), 0.0, subset_prob=1.0)
    lead_i = torch.tensor([True] + [False] * 11)
    lead_ii = torch.tensor([False, True] + [False] * 10)
    limb = torch.tensor([True] * 6 + [False] * 6)
    kinds = {tuple(row.tolist()) for row in views}
    assert kinds == {tuple(lead_i.tolist()), tuple(lead_ii.tolist()), tuple(limb.tolist())}
    # reproducible from the generator
    a = random_lead_mask(64, torch.Generator().manual_seed(3), 0.5, 0.3)
    b = random_lead_mask(64, torch.Generator().manual_seed(3), 0.5, 0.3)
    assert torch.equal(a, b)


def test_random_lead_mask_respects_recorded_leads():
    present = torch.zeros(200, 12, dtype=torch.bool)
    present[:, 6:] = True  # chest leads only: the lead I / II / limb views do not apply
    present[0] = False     # a record without leads stays empty
    mask = random_lead_mask(200, torch.Generator().manual_seed(0), 0.95, 0.5, present=present)
    assert not (mask & ~present).any()
    assert mask[1:].any(dim=1).all() and not mask[0].any()
    with pytest.raises(ValueError, match="present must have shape"):
        random_lead_mask(3, present=present)


def test_time_shift_moves_samples_and_mask():
    ecg = torch.arange(1, 101, dtype=torch.float32).repeat(3, 12, 1)  # value = sample index + 1
    shifted, valid = random_time_shift(ecg, 10, generator=torch.Generator().manual_seed(0))
    for b in range(3):
        row = shifted[b, 0]
        inside = valid[b]
        shift = int(torch.arange(100)[inside][0] + 1 - row[inside][0])
        assert -10 <= shift <= 10
        expected = torch.arange(100) - shift + 1.0
        torch.testing.assert_close(row[inside], expected[inside])
        assert (row[~inside] == 0).all() and int(inside.sum()) == 100 - abs(shift)
        assert (shifted[b] == row).all()  # every lead shifted alike


def test_amplitude_scale_and_noise():
    ecg = torch.ones(200, 12, 50)
    scaled = random_amplitude_scale(ecg, 0.5, 2.0, torch.Generator().manual_seed(0))
    gains = scaled[:, 0, 0]
    assert (scaled == gains[:, None, None]).all()
    assert gains.min() >= 0.5 and gains.max() <= 2.0 and gains.std() > 0.2
    noisy = add_gaussian_noise(torch.zeros(8, 12, 1000), 0.1, torch.Generator().manual_seed(0))
    assert noisy.std().item() == pytest.approx(0.1, rel=0.05)


def test_augment_view_keys_and_masks():
    lead_mask = torch.ones(6, 12, dtype=torch.bool)
    lead_mask[:, 0] = False
    view = augment_ecg_view(torch.randn(6, 12, 500), lead_mask, None, ECGAugmentConfig(max_shift_samples=50),
                            torch.Generator().manual_seed(0))
    assert set(view) == {"ecg", "ecg_lead_mask", "ecg_sample_mask"}
    assert not view["ecg_lead_mask"][:, 0].any()
    assert (view["ecg"] * ~view["ecg_sample_mask"][:, None, :] == 0).all()
