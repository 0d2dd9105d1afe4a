"""Every training-time augmentation: per-sample MONAI dictionary transforms and the batch-level ECG transforms.

Per sample (`AugmentConfig`, ``data.augment`` of a training config; applied by
`cardiacnets.data.torch_data.CardiacTorchDataset`, seeded per sample and epoch):
MONAI dictionary transforms — ``RandScaleIntensityd`` and ``RandGaussianNoised``
on the ECG, ``RandAdjustContrastd`` and ``RandAffined`` on the cines.

Per batch, on the ECG (``ecg``, ``ecg_lead_mask``, ``ecg_sample_mask``), drawn
from the training step's generator so that a resumed run augments identically:

- `random_time_shift`: shift each record by a whole number of samples, zero-filled;
- `random_amplitude_scale`, `add_gaussian_noise`: gain and white noise;
- `random_lead_mask`: dropped leads and reduced-lead views (lead I, lead II, limb
  leads), so one encoder serves 12-lead and reduced-lead input;
- `augment_ecg`: the time shift and lead masks of the ECG training stages
  (``align``, ``heads``); `augment_ecg_view`: one random view of the ECG MAE's
  contrastive objective (`ECGAugmentConfig`, part of its model config).

No transform edits its input in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from einops import rearrange, repeat

from cardiacnets.errors import ConfigError
from cardiacnets.io.ecg_leads import STANDARD_LEADS
from cardiacnets.io.ecg_leads import lead_mask as named_lead_mask

# --- per sample (MONAI dictionary transforms) ------------------------------------------------------------------

@dataclass
class AugmentConfig:
    """Random augmentations applied to training samples (all off by default).

    Attributes:
        prob: probability of applying each enabled augmentation to a sample.
        ecg_amplitude_scale: scale every lead by ``1 + u``, ``u ~ U(-s, s)`` (electrode and body-size variation).
        ecg_noise_std_mV: add Gaussian noise whose standard deviation is drawn from ``U(0, std)``, mV.
        cmr_gamma: gamma (contrast) change, gamma drawn from ``U(1 - g, 1 + g)``.
        cmr_shift_px: in-plane translation of the cine, up to this many pixels in x and y.
        cmr_rotate_deg: in-plane rotation of the cine, up to this many degrees.
    """

    prob: float = 0.5
    ecg_amplitude_scale: float = 0.0
    ecg_noise_std_mV: float = 0.0
    cmr_gamma: float = 0.0
    cmr_shift_px: float = 0.0
    cmr_rotate_deg: float = 0.0

    def validate(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"augment.prob must be in [0, 1], got {self.prob}")
        for name in ("ecg_amplitude_scale", "ecg_noise_std_mV", "cmr_gamma", "cmr_shift_px", "cmr_rotate_deg"):
            if getattr(self, name) < 0:
                raise ConfigError(f"augment.{name} must be non-negative, got {getattr(self, name)}")
        if self.ecg_amplitude_scale >= 1.0:
            raise ConfigError("augment.ecg_amplitude_scale must be below 1 (it would flip leads), "
                              f"got {self.ecg_amplitude_scale}")
        if self.cmr_gamma >= 1.0:
            raise ConfigError(f"augment.cmr_gamma must be below 1, got {self.cmr_gamma}")

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and any((self.ecg_amplitude_scale, self.ecg_noise_std_mV, self.cmr_gamma,
                                      self.cmr_shift_px, self.cmr_rotate_deg))


def build_augmentation(config: AugmentConfig, views: Sequence[str]):
    """The MONAI dictionary transforms for `config`, or ``None`` when nothing is enabled.

    ECG transforms act on ``ecg`` (12, T); cine transforms on ``cmr_<view>``
    viewed as (slices × frames, H, W), one affine for all frames of a subject.

    Args:
        config: which augmentations and how strong.
        views: CMR views present in the samples.

    Returns:
        A ``monai.transforms.Compose`` or ``None``.
    """
    if not config.enabled:
        return None
    from monai.transforms import Compose, RandAdjustContrastd, RandAffined, RandGaussianNoised, RandScaleIntensityd

    cmr_keys = [f"cmr_{view}" for view in views]
    transforms = []
    if config.ecg_amplitude_scale > 0:
        transforms.append(RandScaleIntensityd("ecg", factors=config.ecg_amplitude_scale, prob=config.prob))
    if config.ecg_noise_std_mV > 0:
        transforms.append(RandGaussianNoised("ecg", prob=config.prob, std=config.ecg_noise_std_mV, sample_std=True))
    if cmr_keys and config.cmr_gamma > 0:
        transforms.append(RandAdjustContrastd(cmr_keys, prob=config.prob,
                                              gamma=(1.0 - config.cmr_gamma, 1.0 + config.cmr_gamma)))
    if cmr_keys and (config.cmr_shift_px > 0 or config.cmr_rotate_deg > 0):
        transforms.append(RandAffined(cmr_keys, prob=config.prob, rotate_range=np.deg2rad(config.cmr_rotate_deg),
                                      translate_range=(config.cmr_shift_px, config.cmr_shift_px),
                                      padding_mode="zeros", mode="bilinear"))
    return Compose(transforms) if transforms else None


# --- per batch, on the ECG ----------------------------------------------------------------------------------------

@dataclass
class ECGAugmentConfig:
    """Random transformations producing the two views of the hybrid objective.

    Attributes:
        max_shift_samples: largest time shift (either direction); vacated samples are zero and leave the sample mask.
        amplitude_scale: [low, high] range of a per-record gain, drawn log-uniformly.
        noise_std_mV: standard deviation of added white noise.
        lead_drop_prob: probability of dropping each lead (see `random_lead_mask`).
        subset_prob: probability of a reduced-lead view (lead I, lead II, limb leads).
    """

    max_shift_samples: int = 125
    amplitude_scale: list[float] = field(default_factory=lambda: [0.8, 1.25])
    noise_std_mV: float = 0.02
    lead_drop_prob: float = 0.2
    subset_prob: float = 0.1

    def validate(self) -> None:
        if self.max_shift_samples < 0 or self.noise_std_mV < 0:
            raise ConfigError("ECGAugmentConfig: max_shift_samples and noise_std_mV must be non-negative")
        if len(self.amplitude_scale) != 2 or not 0 < self.amplitude_scale[0] <= self.amplitude_scale[1]:
            raise ConfigError(f"ECGAugmentConfig.amplitude_scale must be [low, high] with 0 < low <= high, got {self.amplitude_scale}")


def random_time_shift(ecg: torch.Tensor, max_shift_samples: int, sample_mask: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift each record in time by a random whole number of samples, filling with zeros.

    A shift keeps the sampling rate (unlike crop-and-resize, which would change
    the heart rate) and is equivalent to cropping a different window of a
    longer recording.

    Args:
        ecg: (B, leads, samples).
        max_shift_samples: shifts are uniform in [−max, +max].
        sample_mask: (B, samples) bool of valid samples; ``None`` = all valid.
        generator: random generator on ``ecg``'s device, for reproducible draws.

    Returns:
        (shifted ecg, shifted sample mask); samples shifted in from outside are zero and invalid.
    """
    batch, _, n_samples = ecg.shape
    shift = torch.randint(-max_shift_samples, max_shift_samples + 1, (batch, 1), generator=generator, device=ecg.device)
    source = torch.arange(n_samples, device=ecg.device) - shift  # (B, samples): where each output sample comes from
    inside = (source >= 0) & (source < n_samples)
    source = source.clamp(0, n_samples - 1)
    shifted = ecg.gather(-1, repeat(source, "b t -> b l t", l=ecg.shape[1])) * rearrange(inside, "b t -> b 1 t")
    valid = inside if sample_mask is None else sample_mask.gather(-1, source) & inside
    return shifted, valid


def random_amplitude_scale(ecg: torch.Tensor, low: float, high: float,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiply each record by a gain drawn log-uniformly from [low, high].

    Args:
        ecg: (B, leads, samples).
        low: smallest gain (> 0).
        high: largest gain.
        generator: random generator on ``ecg``'s device.

    Returns:
        The scaled ECG (a new tensor).
    """
    u = torch.rand(ecg.shape[0], 1, 1, generator=generator, device=ecg.device, dtype=ecg.dtype)
    log_low, log_high = torch.log(torch.tensor(low)), torch.log(torch.tensor(high))
    return ecg * torch.exp(log_low + u * (log_high - log_low))


def add_gaussian_noise(ecg: torch.Tensor, std_mV: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise of standard deviation ``std_mV`` (a new tensor)."""
    return ecg + std_mV * torch.randn(ecg.shape, generator=generator, device=ecg.device, dtype=ecg.dtype)


#: Reduced-lead views drawn by `random_lead_mask`: lead I only (a watch), lead II
#: only (a monitor strip), the six limb leads (no chest electrodes).
LEAD_SUBSET_VIEWS: tuple[str, ...] = ("I", "II", "limb")


def random_lead_mask(batch_size: int, generator: torch.Generator | None = None, lead_drop_prob: float = 0.2,
                     subset_prob: float = 0.2, subsets: tuple[str, ...] = LEAD_SUBSET_VIEWS,
                     present: torch.Tensor | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Draw training-time lead masks so one encoder learns 12-lead and reduced-lead input.

    Each row is, with probability ``subset_prob``, one of the named ``subsets``
    (chosen uniformly; names as in `cardiacnets.io.ecg_leads.resolve_lead_subset`);
    otherwise every lead is dropped independently with ``lead_drop_prob`` and,
    if that drops them all, one random lead is kept. With ``present`` (the
    recorded leads, e.g. a batch's ``ecg_lead_mask``) the result is intersected
    with it: a row whose independent drops would keep no recorded lead keeps
    one random recorded lead, and a subset view sharing no lead with the record
    is not used for that row (it keeps its independent draw). Rows without any
    recorded lead stay empty.

    Args:
        batch_size: rows to draw.
        generator: torch random generator (CPU) for reproducible draws.
        lead_drop_prob: probability of dropping each lead independently.
        subset_prob: probability of a whole named subset view instead.
        subsets: named subset views to choose from.
        present: optional (B, 12) bool mask of recorded leads.
        device: device of the returned mask (default: that of ``present``, else CPU).

    Returns:
        (B, 12) bool mask, True = lead kept.
    """
    if not 0.0 <= lead_drop_prob <= 1.0 or not 0.0 <= subset_prob <= 1.0:
        raise ValueError(f"probabilities must be in [0, 1], got lead_drop_prob={lead_drop_prob}, subset_prob={subset_prob}")
    n_leads = len(STANDARD_LEADS)
    present_cpu = None
    if present is not None:
        if present.shape != (batch_size, n_leads):
            raise ValueError(f"present must have shape ({batch_size}, {n_leads}), got {tuple(present.shape)}")
        present_cpu = present.detach().to("cpu", torch.bool)
    keep = torch.rand(batch_size, n_leads, generator=generator) >= lead_drop_prob
    allowed = present_cpu if present_cpu is not None else torch.ones(batch_size, n_leads, dtype=torch.bool)
    keep &= allowed
    # A row left without leads keeps one lead drawn uniformly among the allowed ones.
    rescue = torch.argmax(torch.rand(batch_size, n_leads, generator=generator) * allowed, dim=1)
    empty = ~keep.any(dim=1)
    keep[empty, rescue[empty]] = allowed[empty, rescue[empty]]
    if subsets:
        views = torch.stack([torch.from_numpy(named_lead_mask(name)) for name in subsets])  # (n_views, 12)
        use_view = torch.rand(batch_size, generator=generator) < subset_prob
        which = torch.randint(len(subsets), (batch_size,), generator=generator)
        view = views[which] & allowed
        use_view &= view.any(dim=1)  # a view the record lacks entirely: keep the independent draw
        keep = torch.where(use_view[:, None], view, keep)
    target = device if device is not None else (present.device if present is not None else "cpu")
    return keep.to(target)


def augment_ecg_view(ecg: torch.Tensor, lead_mask: torch.Tensor | None, sample_mask: torch.Tensor | None,
                     config: ECGAugmentConfig, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One random view of a batch: time shift, amplitude scale, noise and lead masking.

    Args:
        ecg: (B, leads, samples) in mV.
        lead_mask: (B, leads) bool of recorded leads, or ``None``.
        sample_mask: (B, samples) bool of valid samples, or ``None``.
        config: the augmentation settings.
        generator: random generator on ``ecg``'s device (the lead masks are drawn on the CPU
            from the global generator when this is not a CPU generator).

    Returns:
        Dict with ``ecg``, ``ecg_lead_mask`` and ``ecg_sample_mask`` of the view.
    """
    shifted, valid = random_time_shift(ecg, config.max_shift_samples, sample_mask, generator)
    scaled = random_amplitude_scale(shifted, *config.amplitude_scale, generator=generator)
    noisy = add_gaussian_noise(scaled, config.noise_std_mV, generator) * rearrange(valid, "b t -> b 1 t")
    cpu_generator = generator if generator is not None and generator.device.type == "cpu" else None
    leads = random_lead_mask(ecg.shape[0], cpu_generator, config.lead_drop_prob, config.subset_prob,
                             LEAD_SUBSET_VIEWS, present=lead_mask, device=ecg.device)
    return {"ecg": noisy, "ecg_lead_mask": leads, "ecg_sample_mask": valid}


def augment_ecg(batch: dict, generator: torch.Generator, max_shift_samples: int = 0, lead_drop_prob: float = 0.0,
                subset_prob: float = 0.0) -> dict:
    """The batch with the training-time ECG augmentation of the ECG stages applied.

    Args:
        batch: collated batch with ``ecg``, ``ecg_sample_mask`` and ``ecg_lead_mask``.
        generator: the step's CPU generator.
        max_shift_samples: random time shift, zero-filled (`random_time_shift`); 0: none.
        lead_drop_prob, subset_prob: random lead dropping and reduced-lead views
            (`random_lead_mask`); both 0: none.

    Returns:
        A new batch dict (the input is not modified).
    """
    if max_shift_samples > 0:
        ecg = batch["ecg"]
        # The shift is drawn on the ECG's device; a GPU needs its own generator, seeded from the step's.
        device_generator = generator if ecg.device.type == "cpu" else torch.Generator(ecg.device).manual_seed(
            int(torch.randint(2**62, (1,), generator=generator)))
        shifted, valid = random_time_shift(ecg, max_shift_samples, batch["ecg_sample_mask"], device_generator)
        batch = {**batch, "ecg": shifted, "ecg_sample_mask": valid}
    if lead_drop_prob > 0 or subset_prob > 0:
        present = batch["ecg_lead_mask"]
        mask = random_lead_mask(len(batch["subject_id"]), generator, lead_drop_prob, subset_prob, present=present)
        batch = {**batch, "ecg_lead_mask": mask.to(present.device)}
    return batch
