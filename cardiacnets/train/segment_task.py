"""The ``segment`` training stage: a cine-frame segmenter trained on the training set's segmentations.

CardiacNets (arXiv 2411.13602) judges generated cines by the cardiac
function measured on them; `cardiacnets.evaluate.generation` measures it with
a segmentation network trained here on the simulator's labelled cines
(``cmr_<view>`` with ``seg_<view>``, UK Biobank labels: 1 LV cavity, 2 LV
myocardium, 3 RV cavity). Each training sample contributes
``frames_per_subject`` random frames; the loss is MONAI's ``DiceCELoss``
(soft Dice + cross-entropy, Isensee et al.'s nnU-Net recipe).

The simulator's images are cleaner than real scans, and real data arrive in
any in-plane orientation (ACDC stores no affine), so training frames are
augmented with MONAI dictionary transforms (`SegmentAugmentConfig`): flips and
90° rotations, a random elastic deformation with rotation, zoom and shift
(labels resampled with nearest neighbour), Gaussian blur, a smooth
multiplicative bias field, a random intensity factor per label (blood pools,
myocardium and background each scaled on their own: real blood pools are
darker and less uniform relative to the myocardium than the simulator's),
smooth random fields of intensity and contrast (a texture the simulator's
flat tissues lack), gamma, intensity scaling, a
random monotone intensity remapping (``RandHistogramShift``) and Rician
noise. The frames of one subject share
one draw (one scan has one geometry and contrast). The draws are seeded from
the loop's per-step generator, so a resumed run augments identically.
Validation scores frames ``val_frame_stride`` apart without augmentation:
the loss and the Dice of each foreground class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from einops import rearrange

from monai.transforms import MapTransform, RandomizableTransform

from cardiacnets.errors import ConfigError, InputError
from cardiacnets.io.cmr_image import SEG_LABELS
from cardiacnets.models.segmenter import CineGeometry, CineSegmenter, save_geometry
from cardiacnets.train.tasks import Task, register_task

#: Foreground classes scored, in label order (1, 2, 3).
FOREGROUND = tuple(name for name, label in sorted(SEG_LABELS.items(), key=lambda item: item[1]) if label > 0)


@dataclass
class SegmentAugmentConfig:
    """Training augmentation of the ``segment`` task (each transform applied with probability ``prob``).

    Attributes:
        prob: probability of each enabled transform.
        flip: random flips of both in-plane axes and random 90° rotations (real scans come in
            any orientation).
        rotate_deg: random rotation up to this many degrees either way.
        zoom: random isotropic zoom by ``1 + u``, ``u ~ U(-zoom, zoom)`` (pixel size and heart size).
        shift_px: random translation up to this many pixels in x and y.
        elastic_px: largest offset of the elastic deformation's control points (12 px apart), pixels;
            0 keeps the transform affine.
        blur_sigma_px: Gaussian blur with sigma drawn up to this (pixels).
        bias_field: coefficient range of the smooth multiplicative bias field (coil sensitivity).
        label_contrast: each label's region (background, LV cavity, myocardium, RV cavity) is scaled
            by its own factor from ``U(1 - label_contrast, 1 + label_contrast / 2)``.
        texture: strength of the smooth random fields (about 6 px apart) that scale the intensity by
            ``U(1 - texture, 1 + texture)`` and the contrast by a gamma in ``U(1 - texture / 2, 1 + texture)``.
        gamma: gamma drawn from ``U(1 - gamma, 1 + gamma)``.
        intensity_scale: intensities scaled by ``1 + u``, ``u ~ U(-s, s)``.
        histogram_shift: random monotone remapping of the intensity histogram.
        noise_std: Rician noise with standard deviation drawn up to this (intensity units).
    """

    prob: float = 0.3
    flip: bool = True
    rotate_deg: float = 20.0
    zoom: float = 0.2
    shift_px: float = 6.0
    elastic_px: float = 2.0
    blur_sigma_px: float = 1.0
    bias_field: float = 0.4
    label_contrast: float = 0.5
    texture: float = 0.4
    gamma: float = 0.5
    intensity_scale: float = 0.2
    histogram_shift: bool = True
    noise_std: float = 0.06

    def validate(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ConfigError(f"options.augment.prob must be in [0, 1], got {self.prob}")
        for name in ("rotate_deg", "zoom", "shift_px", "elastic_px", "blur_sigma_px", "bias_field", "label_contrast",
                     "texture", "gamma", "intensity_scale", "noise_std"):
            if getattr(self, name) < 0:
                raise ConfigError(f"options.augment.{name} must be non-negative, got {getattr(self, name)}")
        if max(self.gamma, self.zoom, self.intensity_scale, self.texture, self.label_contrast) >= 1.0:
            raise ConfigError("options.augment.gamma, zoom, intensity_scale, texture and label_contrast "
                              "must be below 1")


class RandLabelIntensityd(RandomizableTransform, MapTransform):
    """Scale each label's region of the image by its own random factor (label-conditioned contrast).

    A light form of the domain randomisation of SynthSeg (Billot et al., Medical Image
    Analysis 2023), which renders each label with random intensities so that a network
    trained on synthetic images segments real scans of any contrast. MONAI has no
    label-conditioned intensity transform. The factor map is smoothed with a Gaussian of
    sigma 1 px so region borders stay soft, as partial volume makes them in real images.

    Args:
        keys: image keys, (channels, H, W).
        label_key: key of the (channels, H, W) label map (integer values 0..n_labels-1).
        factor_range: each label's factor is drawn from ``U(*factor_range)``.
        n_labels: labels in the map.
        prob: probability of applying the transform.
    """

    def __init__(self, keys, label_key: str, factor_range: tuple[float, float], n_labels: int = len(SEG_LABELS),
                 prob: float = 0.1):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.label_key = label_key
        self.factor_range = factor_range
        self.n_labels = n_labels
        self.factors = np.ones(n_labels)

    def randomize(self, data=None) -> None:
        super().randomize(None)
        self.factors = self.R.uniform(*self.factor_range, size=self.n_labels)

    def __call__(self, data):
        from monai.utils import convert_to_tensor
        from scipy import ndimage

        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        labels = np.asarray(convert_to_tensor(d[self.label_key], track_meta=False)).round().astype(int)
        factor_map = ndimage.gaussian_filter(self.factors[np.clip(labels, 0, self.n_labels - 1)], sigma=(0, 1, 1))
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], dtype=torch.float32, track_meta=False)
            d[key] = image * torch.as_tensor(factor_map, dtype=torch.float32)
        return d


def build_segmentation_augmentation(config: SegmentAugmentConfig, image_size: tuple[int, int] = (64, 64)):
    """MONAI dictionary transforms over ``image`` (frames, H, W) float and ``label`` (frames, H, W).

    Geometric transforms move image and label together (labels by nearest neighbour);
    intensity transforms touch the image only. The result is clipped to [0, 1], the
    training set's intensity range.

    Args:
        config: which transforms and how strong.
        image_size: (H, W) of the frames (the smooth random fields are built at this size).

    Returns:
        A ``monai.transforms.Compose`` (seed it with ``set_random_state``).
    """
    from monai.transforms import (
        Compose, Rand2DElasticd, RandAdjustContrastd, RandAffined, RandBiasFieldd, RandFlipd, RandGaussianSmoothd,
        RandHistogramShiftd, RandRicianNoised, RandRotate90d, RandScaleIntensityd, RandSmoothFieldAdjustContrastd,
        RandSmoothFieldAdjustIntensityd, ScaleIntensityRanged,
    )

    keys, p = ("image", "label"), config.prob
    transforms = []
    if config.flip:
        transforms += [RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1),
                       RandRotate90d(keys, prob=0.75, max_k=3)]
    affine = dict(rotate_range=np.deg2rad(config.rotate_deg), scale_range=(config.zoom, config.zoom),
                  translate_range=(config.shift_px, config.shift_px), mode=("bilinear", "nearest"),
                  padding_mode="zeros")
    if config.elastic_px > 0:  # one resampling for the deformation and the affine part
        transforms.append(Rand2DElasticd(keys, spacing=(12, 12), magnitude_range=(0.0, config.elastic_px), prob=p,
                                         **affine))
    elif config.rotate_deg > 0 or config.zoom > 0 or config.shift_px > 0:
        transforms.append(RandAffined(keys, prob=p, **affine))
    if config.blur_sigma_px > 0:
        sigma = (0.25, config.blur_sigma_px)
        transforms.append(RandGaussianSmoothd("image", sigma_x=sigma, sigma_y=sigma, prob=p))
    if config.bias_field > 0:
        transforms.append(RandBiasFieldd("image", coeff_range=(0.0, config.bias_field), prob=p))
    if config.label_contrast > 0:
        transforms.append(RandLabelIntensityd("image", "label", (1.0 - config.label_contrast,
                                                                 1.0 + config.label_contrast / 2), prob=p))
    if config.texture > 0:
        field = dict(spatial_size=tuple(image_size), rand_size=(max(2, image_size[0] // 10),) * 2, prob=p,
                     mode="bicubic", align_corners=True)
        transforms += [
            RandSmoothFieldAdjustIntensityd("image", gamma=(1.0 - config.texture, 1.0 + config.texture), **field),
            RandSmoothFieldAdjustContrastd("image", gamma=(1.0 - config.texture / 2, 1.0 + config.texture), **field),
        ]
    if config.gamma > 0:
        transforms.append(RandAdjustContrastd("image", gamma=(1.0 - config.gamma, 1.0 + config.gamma), prob=p))
    if config.intensity_scale > 0:
        transforms.append(RandScaleIntensityd("image", factors=config.intensity_scale, prob=p))
    if config.histogram_shift:
        transforms.append(RandHistogramShiftd("image", num_control_points=(5, 10), prob=p))
    if config.noise_std > 0:
        transforms.append(RandRicianNoised("image", prob=p, std=config.noise_std, sample_std=True))
    transforms.append(ScaleIntensityRanged("image", a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True))
    return Compose(transforms)


@dataclass
class SegmentOptions:
    """Options of the ``segment`` task.

    Attributes:
        view: the CMR view whose cines and segmentations are trained on.
        frames_per_subject: random frames of each training sample per step.
        val_frame_stride: validation scores every this-many-th frame of each subject.
        lambda_dice: weight of the soft Dice term of ``DiceCELoss``.
        lambda_ce: weight of its cross-entropy term.
        augment: training augmentation.
    """

    view: str = "sa"
    frames_per_subject: int = 4
    val_frame_stride: int = 3
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    augment: SegmentAugmentConfig = field(default_factory=SegmentAugmentConfig)

    def validate(self) -> None:
        if self.frames_per_subject < 1 or self.val_frame_stride < 1:
            raise ConfigError("options.frames_per_subject and options.val_frame_stride must be at least 1")
        if self.lambda_dice < 0 or self.lambda_ce < 0 or self.lambda_dice + self.lambda_ce == 0:
            raise ConfigError("options.lambda_dice and options.lambda_ce must be non-negative, not both 0")


def dice_per_class(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dice of each foreground class per image (MONAI ``compute_dice``), averaged over the images.

    An image without a class in either prediction or truth scores 1 for it (nothing to
    find, nothing found); one where only one of them has the class scores 0.

    Args:
        logits: (N, classes, H, W).
        labels: (N, H, W) integer labels.

    Returns:
        ``{"dice_<class>": scalar}`` for each foreground class and ``dice_mean``.
    """
    from monai.metrics import compute_dice

    n_classes = logits.shape[1]
    prediction = logits.argmax(dim=1, keepdim=True)
    scores = compute_dice(prediction, labels.unsqueeze(1).long(), include_background=False, ignore_empty=False,
                          num_classes=n_classes)  # (N, classes - 1)
    scores = scores.float().mean(dim=0)
    out = {f"dice_{name}": scores[i] for i, name in enumerate(FOREGROUND[:n_classes - 1])}
    out["dice_mean"] = scores.mean()
    return out


@register_task
class SegmentTask(Task):
    """Train a `CineSegmenter` on cine frames and their segmentations (``seg_<view>``)."""

    name = "segment"
    options_class = SegmentOptions
    default_model = "cmr_seg_unet_demo"

    def __init__(self, config):
        super().__init__(config)
        from monai.losses import DiceCELoss

        augment = config.data.augment
        if augment.enabled and (augment.cmr_shift_px > 0 or augment.cmr_rotate_deg > 0):
            raise ConfigError("task segment: data.augment.cmr_shift_px / cmr_rotate_deg would move the cines but "
                              "not their labels; use options.augment instead")
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=self.options.lambda_dice,
                               lambda_ce=self.options.lambda_ce)
        self.augmentation = None  # built for the frame size of the first batch
        self.augmentation_size: tuple[int, int] | None = None

    def views(self) -> list[str]:
        return [self.options.view]

    def required_modalities(self) -> list[str]:
        return [self.options.view, f"seg_{self.options.view}"]

    def segmentations(self) -> bool:
        return True

    def check_model(self, model):
        if not isinstance(model, CineSegmenter):
            raise ConfigError(f"task segment trains a CineSegmenter; model {self.model_name!r} "
                              f"is a {type(model).__name__}")

    def _frames(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's cines and labels with slices and frames flattened: (B, slices × frames, H, W) each."""
        view = self.options.view
        if f"seg_{view}" not in batch:
            raise ConfigError(f"task segment: the batches carry no seg_{view} (the training set stores no "
                              f"segmentation of view {view!r})")
        cines = rearrange(batch[f"cmr_{view}"], "b s f h w -> b (s f) h w")
        labels = rearrange(batch[f"seg_{view}"], "b s f h w -> b (s f) h w")
        return cines, labels

    def training_step(self, model, batch, generator):
        cines, labels = self._frames(batch)
        n_subjects, n_frames = cines.shape[:2]
        k = self.options.frames_per_subject
        # k frames per subject, drawn without replacement when the cine has enough of them.
        scores = torch.rand(n_subjects, n_frames, generator=generator)
        chosen = scores.argsort(dim=1)[:, :min(k, n_frames)].to(cines.device)
        images = torch.gather(cines, 1, chosen[..., None, None].expand(-1, -1, *cines.shape[-2:]))
        targets = torch.gather(labels, 1, chosen[..., None, None].expand(-1, -1, *labels.shape[-2:]))
        images, targets = self._augment(images, targets, int(torch.randint(2**31 - 1, (1,), generator=generator)))
        logits = model(rearrange(images, "b k h w -> (b k) 1 h w"))
        return {"loss_dice_ce": self.loss(logits.float(), rearrange(targets, "b k h w -> (b k) 1 h w").long())}

    def _augment(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment each subject's frames with one draw of the MONAI transforms (on the CPU)."""
        from monai.utils import convert_to_tensor

        size = tuple(images.shape[-2:])
        if self.augmentation is None or self.augmentation_size != size:
            self.augmentation = build_segmentation_augmentation(self.options.augment, size)
            self.augmentation_size = size
        self.augmentation.set_random_state(seed=seed)
        device = images.device
        out_images, out_labels = [], []
        with torch.autocast("cpu", enabled=False):  # the loop's bf16 autocast would reach MONAI's numpy calls
            for image, label in zip(images.float().cpu(), labels.cpu()):
                data = self.augmentation({"image": image, "label": label.float()})
                out_images.append(convert_to_tensor(data["image"], dtype=torch.float32, track_meta=False))
                out_labels.append(convert_to_tensor(data["label"], track_meta=False).round().to(torch.uint8))
        return torch.stack(out_images).to(device), torch.stack(out_labels).to(device)

    def validation_step(self, model, batch):
        cines, labels = self._frames(batch)
        stride = self.options.val_frame_stride
        images = rearrange(cines[:, ::stride], "b k h w -> (b k) 1 h w")
        targets = rearrange(labels[:, ::stride], "b k h w -> (b k) h w").long()
        logits = model(images).float()
        return {"loss_dice_ce": self.loss(logits, targets.unsqueeze(1)), **dice_per_class(logits, targets)}

    def export(self, model, run_dir):
        """Save the segmenter, with the cine geometry of its training set (``cmr_geometry.json``) when recorded."""
        folder = model.save_pretrained(run_dir / "model")
        try:
            save_geometry(CineGeometry.from_dataset(self.config.data.path), folder)
        except InputError as err:
            print(f"note: {err}; cmr_geometry.json not written (give the geometry when evaluating)")
        return {"model": folder}
