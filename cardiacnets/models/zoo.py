"""The registered models: demo (CPU-sized) and paper-scale ECG, CMR and alignment models.

Importing this module registers every model class with the registry
(`cardiacnets.models.registry`) under the names below; `list_models()` lists
them. Paper-scale entries follow CardiacNets (arXiv 2411.13602): ECG ViT-Large
over 12 × 5000 samples at 500 Hz in patches of 100 samples (1024 wide, 24
blocks, 16 heads, projected to 256), MAE with mask ratio 0.8, Swin-B CMR
encoders on 50 stacked frames at 224², a 256-d shared space with temperature
0.1 and frozen CMR encoders. Demo entries are sized for a 2-core CPU on the
demo training sets (12 × 2500 ECGs at 250 Hz; 1 × 25 × 64 × 64 cines).

`load_model_specs` reads a YAML file of named model specs (registry name +
overrides), such as ``configs/paper/models.yaml``.
"""

from __future__ import annotations

import os

from cardiacnets.config import from_dict, read_yaml
from cardiacnets.errors import ConfigError
from cardiacnets.models.clip import CardiacCLIP, CardiacCLIPConfig, EncoderSpec, build_cardiac_clip
from cardiacnets.models.cmr_encoder import CMREncoder, CMREncoderConfig
from cardiacnets.models.cmr_mim import CMRMaskedModel, CMRMaskedModelConfig
from cardiacnets.models.ecg_mae import ECGMAE, ECGMAEConfig
from cardiacnets.models.ecg_resnet import ResNet1D, ResNet1DConfig
from cardiacnets.models.ecg_vit import ECGViT, ECGViTConfig
from cardiacnets.models.registry import create_model, register_model

# --- ECG encoders ------------------------------------------------------------------------------------------------

#: The demo ECG ViT (250 Hz, 10 s: 12 leads × 25 patches of 0.4 s = 300 tokens). Width 256 with 64-wide
#: heads keeps the bf16 matmuls near the machine's peak; see ``cardiacnets bench train``.
ECG_VIT_TINY = dict(n_samples=2500, patch_size=100, width=256, depth=4, heads=4, embed_dim=256)
#: ViT-Base over the paper's input (12 × 5000 at 500 Hz, patches of 100 samples: 600 tokens).
ECG_VIT_BASE = dict(n_samples=5000, patch_size=100, width=768, depth=12, heads=12, embed_dim=256)
#: The paper's ECG encoder: ViT-Large, 1024 wide, 24 blocks, 16 heads, projected to 256 (≈ 303M parameters).
ECG_VIT_LARGE = dict(n_samples=5000, patch_size=100, width=1024, depth=24, heads=16, embed_dim=256,
                     drop_path_rate=0.1)

register_model("ecg_vit_tiny", ECGViTConfig, ECGViT, "demo ECG ViT: 12 x 2500 at 250 Hz, 256 wide, 4 blocks",
               **ECG_VIT_TINY)
register_model("ecg_vit_base", ECGViTConfig, ECGViT, "ECG ViT-Base: 12 x 5000 at 500 Hz, 768 wide, 12 blocks",
               **ECG_VIT_BASE)
register_model("ecg_vit_large", ECGViTConfig, ECGViT, "paper ECG ViT-Large: 12 x 5000 at 500 Hz, 1024 wide, 24 blocks",
               **ECG_VIT_LARGE)
register_model("ecg_resnet1d", ResNet1DConfig, ResNet1D, "supervised baseline: 1-D ResNet (4 stages of 2 blocks)",
               n_samples=2500)

# --- ECG pretraining ---------------------------------------------------------------------------------------------

register_model("ecg_mae_tiny", ECGMAEConfig, ECGMAE,
               "demo hybrid MAE (mask 0.8, 2-block decoder, two-view InfoNCE weight 0.1) around ecg_vit_tiny",
               encoder=ECG_VIT_TINY, mask_ratio=0.8, decoder_width=128, decoder_depth=2, decoder_heads=2,
               contrastive_weight=0.1)
register_model("ecg_mae_large", ECGMAEConfig, ECGMAE,
               "paper MAE (mask 0.8, 512-wide 8-block decoder) around ecg_vit_large",
               encoder=ECG_VIT_LARGE, mask_ratio=0.8, decoder_width=512, decoder_depth=8, decoder_heads=16,
               contrastive_weight=0.0,
               augment=dict(max_shift_samples=250))

# --- CMR encoders ------------------------------------------------------------------------------------------------

CMR_DEMO = dict(backbone="resnet10t", slices=1, frames=25, img_size=64, embed_dim=256)
CMR_SWIN_BASE = dict(backbone="swin_base_patch4_window7_224", slices=1, frames=50, img_size=224, pass_img_size=True,
                     embed_dim=256, backbone_kwargs={"drop_path_rate": 0.1})

register_model("cmr_encoder_demo", CMREncoderConfig, CMREncoder,
               "demo CMR encoder: timm resnet10t on 25 stacked frames at 64x64", **CMR_DEMO)
register_model("cmr_encoder_swin_base", CMREncoderConfig, CMREncoder,
               "paper CMR encoder: timm Swin-B on 50 stacked frames at 224x224", **CMR_SWIN_BASE)
register_model("cmr_mim_demo", CMRMaskedModelConfig, CMRMaskedModel,
               "demo masked-image pretraining of sa and la_4ch cmr_encoder_demo encoders (+ sa/la InfoNCE)",
               views=["sa", "la_4ch"], encoders={"sa": CMR_DEMO, "la_4ch": CMR_DEMO}, mask_patch_size=8,
               mask_ratio=0.6, decoder_width=128, contrastive_weight=0.1)
register_model("cmr_mim_swin_base", CMRMaskedModelConfig, CMRMaskedModel,
               "paper-scale masked-image pretraining of Swin-B encoders (3 short-axis slices, 4-chamber)",
               views=["sa", "la_4ch"], encoders={"sa": {**CMR_SWIN_BASE, "slices": 3}, "la_4ch": CMR_SWIN_BASE},
               mask_patch_size=16, mask_ratio=0.6, decoder_width=256, contrastive_weight=0.1)

# --- alignment ---------------------------------------------------------------------------------------------------

register_model("cardiac_clip_demo", CardiacCLIPConfig, build_cardiac_clip,
               "demo alignment: ecg_vit_tiny with cmr_encoder_demo for sa and la_4ch, 256-d, T 0.1 learnable",
               ecg={"model": "ecg_vit_tiny"},
               cmr={"sa": {"model": "cmr_encoder_demo"}, "la_4ch": {"model": "cmr_encoder_demo"}},
               views=["sa", "la_4ch"], embed_dim=256, temperature=0.1, learnable_temperature=True, freeze_cmr=False)
register_model("cardiac_clip_paper", CardiacCLIPConfig, build_cardiac_clip,
               "paper alignment: ecg_vit_large with frozen Swin-B sa (3 slices) and la_4ch encoders, 256-d, T 0.1",
               ecg={"model": "ecg_vit_large"},
               cmr={"sa": {"model": "cmr_encoder_swin_base", "overrides": {"slices": 3}},
                    "la_4ch": {"model": "cmr_encoder_swin_base"}},
               views=["sa", "la_4ch"], embed_dim=256, temperature=0.1, learnable_temperature=False, freeze_cmr=True)


def load_model_specs(path: str | os.PathLike) -> dict[str, EncoderSpec]:
    """Read a YAML mapping of named model specs (``name: {model: ..., overrides: {...}}``).

    Args:
        path: the YAML file (e.g. ``configs/paper/models.yaml``).

    Returns:
        Spec by entry name; build one with `create_from_spec`.

    Raises:
        ConfigError: unknown keys or a malformed entry, naming the file.
    """
    data = read_yaml(path)
    specs = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: entry {name!r} must be a mapping with 'model' and 'overrides'")
        try:
            specs[name] = from_dict(EncoderSpec, entry, where=name)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    return specs


def create_from_spec(spec: EncoderSpec):
    """Build the model a spec names (``create_model(spec.model, **spec.overrides)``).

    ``init_from`` is honoured by the alignment models' builders only; for a single
    encoder load the folder with ``load_pretrained`` instead.
    """
    if spec.init_from is not None:
        raise ConfigError(f"{spec.model}: init_from is only read inside an alignment model's encoder specs")
    return create_model(spec.model, **spec.overrides)


__all__ = ["CMREncoder", "CMRMaskedModel", "CardiacCLIP", "ECGMAE", "ECGViT", "ResNet1D", "create_from_spec",
           "load_model_specs"]
