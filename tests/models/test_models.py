"""Tests of the models: every registered model at tiny size, lead masking, FiLM, MAE, CMR encoders, CLIP.

Models are built from the registry with tiny overrides derived from their
config class (`tiny_overrides`), so a newly registered model is tested too.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import AutoencoderKL

from cardiacnets.bench.train import step_losses, synthetic_batch
from cardiacnets.config import to_dict
from cardiacnets.errors import ConfigError, InputError
from cardiacnets.generation.anatomy_prior import AnatomyDenoiser, AnatomyDenoiserConfig
from cardiacnets.generation.denoiser import CineDenoiser, CineDenoiserConfig
from cardiacnets.generation.image_decoder import LabelConditionedDenoiser, LabelDenoiserConfig
from cardiacnets.generation.vae import CMRVAEConfig
from cardiacnets.models import create_model, get_model_config, list_models
from cardiacnets.models.clip import CardiacCLIP, CardiacCLIPConfig
from cardiacnets.models.cmr_encoder import CMREncoder, CMREncoderConfig
from cardiacnets.models.cmr_mim import CMRMaskedModel, CMRMaskedModelConfig
from cardiacnets.models.ecg_mae import ECGMAE, ECGMAEConfig
from cardiacnets.models.ecg_resnet import ResNet1D, ResNet1DConfig
from cardiacnets.models.ecg_vit import ECGViT, ECGViTConfig
from cardiacnets.models.layers import count_parameters, info_nce
from cardiacnets.models.pretrained import load_pretrained
from cardiacnets.models.segmenter import CineSegmenter, SegmenterConfig
from cardiacnets.models.zoo import create_from_spec, load_model_specs

TINY_VIT = dict(n_samples=500, patch_size=100, width=64, depth=1, heads=1, embed_dim=32)
TINY_RESNET = dict(n_samples=500, stem_width=8, widths=[8, 16], blocks=[1, 1], embed_dim=32)
TINY_SWIN = {"embed_dim": 32, "depths": [1, 1], "num_heads": [1, 2], "window_size": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cmr(config: CMREncoderConfig) -> dict:
    out = dict(frames=4, img_size=32, embed_dim=32)
    if config.backbone.startswith("swin"):
        out["backbone_kwargs"] = {**config.backbone_kwargs, **TINY_SWIN}
    return out


def tiny_overrides(name: str) -> dict:
    """Overrides shrinking a registered model to test size, chosen by its config class."""
    config = get_model_config(name)
    if isinstance(config, ECGViTConfig):
        return dict(TINY_VIT)
    if isinstance(config, ResNet1DConfig):
        return dict(TINY_RESNET)
    if isinstance(config, ECGMAEConfig):
        return dict(encoder=TINY_VIT, decoder_width=32, decoder_depth=1, decoder_heads=1)
    if isinstance(config, CMREncoderConfig):
        return tiny_cmr(config)
    if isinstance(config, CMRMaskedModelConfig):
        return dict(encoders={v: {**to_dict(config.encoders[v]), **tiny_cmr(config.encoders[v])} for v in config.views},
                    mask_patch_size=8, decoder_width=16)
    if isinstance(config, CardiacCLIPConfig):
        cmr = {}
        for view, spec in config.cmr.items():
            cmr[view] = {"model": spec.model,
                         "overrides": {**spec.overrides, **tiny_cmr(get_model_config(spec.model, **spec.overrides))}}
        return dict(ecg={"model": config.ecg.model, "overrides": tiny_overrides(config.ecg.model)}, cmr=cmr)
    if isinstance(config, SegmenterConfig):
        return dict(channels=[4, 8], strides=[2], num_res_units=1)
    if isinstance(config, CMRVAEConfig):
        return dict(image_size=16, block_out_channels=[8, 16], norm_num_groups=4, latent_channels=2)
    if isinstance(config, CineDenoiserConfig):
        return dict(num_frames=3, latent_channels=2, latent_size=8, spatial_patch=2, temporal_patch=2,
                    block_out_channels=[8, 16], cross_attention_levels=[True, False], attention_head_dim=2,
                    norm_num_groups=4, cross_attention_dim=8, condition_dim=8, ecg_token_dim=8, ecg_embed_dim=8,
                    n_demographics=2)
    if isinstance(config, AnatomyDenoiserConfig):
        return dict(code_dim=6, condition_dim=5, width=16, depth=2)
    if isinstance(config, LabelDenoiserConfig):
        return dict(latent_channels=2, latent_size=8, downsample_factor=2, block_out_channels=[8, 16],
                    attention_levels=[False, True], norm_num_groups=4)
    raise AssertionError(f"no tiny recipe for {name} ({type(config).__name__}); add one here")


def tiny_model(name: str, **extra):
    torch.manual_seed(0)
    return create_model(name, **{**tiny_overrides(name), **extra})


def outputs(model, batch) -> dict:
    """Every model's outputs as a dict of tensors."""
    if isinstance(model, (ECGMAE, CMRMaskedModel, CardiacCLIP)):
        return model(batch)
    if isinstance(model, CMREncoder):
        return {"embedding": model(batch["cmr_sa"])}
    if isinstance(model, CineSegmenter):
        return {"logits": model(batch["frames"])}
    if isinstance(model, (CineDenoiser, AnatomyDenoiser, LabelConditionedDenoiser)):
        return {"prediction": model(**batch).sample}
    if isinstance(model, AutoencoderKL):
        return {"reconstruction": model(batch["frames"]).sample}
    return {"embedding": model(batch["ecg"], batch.get("ecg_lead_mask"), batch.get("demographics"))}


def public_config(model) -> dict:
    """A model's config as plain data, without diffusers' bookkeeping keys (``_name_or_path``, ...)."""
    return {k: v for k, v in to_dict(model.config).items() if not k.startswith("_")}


# --- every registered model ----------------------------------------------------------------------------------------

def test_registry_lists_the_required_models():
    required = {"ecg_vit_tiny", "ecg_vit_base", "ecg_vit_large", "ecg_resnet1d", "ecg_mae_tiny", "ecg_mae_large",
                "cmr_encoder_demo", "cmr_encoder_swin_base", "cardiac_clip_demo", "cardiac_clip_paper"}
    assert required <= set(list_models())
    assert list_models("ecg_vit_*") == ["ecg_vit_base", "ecg_vit_large", "ecg_vit_tiny"]


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_shapes_no_nan(name):
    model = tiny_model(name).train()
    batch = synthetic_batch(model, 3, torch.Generator().manual_seed(1))
    out = outputs(model, batch)
    if isinstance(model, (ECGViT, ResNet1D, CMREncoder)):
        assert out["embedding"].shape == (3, model.config.embed_dim)
    if isinstance(model, ECGViT):
        c = model.config
        assert model.forward_features(batch["ecg"]).shape == (3, 1 + c.n_leads * c.n_samples // c.patch_size, c.width)
    if isinstance(model, CardiacCLIP):
        assert set(out) == {"ecg", "logit_scale", *(f"cmr_{v}" for v in model.config.views)}
        for key in out:
            if key != "logit_scale":
                assert out[key].shape == (3, model.config.embed_dim)
    if isinstance(model, (ECGMAE, CMRMaskedModel)):
        assert all(k.startswith("loss_") and v.ndim == 0 for k, v in out.items())
    for value in out.values():
        assert torch.isfinite(value).all()
    loss = sum(step_losses(model, batch).values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_save_pretrained_round_trip_identical_outputs(name, tmp_path):
    model = tiny_model(name).eval()
    batch = synthetic_batch(model, 2, torch.Generator().manual_seed(2))
    torch.manual_seed(5)  # the pretraining models mask at random
    with torch.no_grad():
        before = outputs(model, batch)
    model.save_pretrained(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert meta.get("class", meta.get("_class_name")) == type(model).__name__  # cardiacnets or diffusers layout
    loaded = type(model).from_pretrained(tmp_path / "saved").eval()
    assert public_config(loaded) == public_config(model)
    torch.manual_seed(5)
    with torch.no_grad():
        after = outputs(loaded, batch)
    assert before.keys() == after.keys()
    for key in before:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0)


def test_create_model_rejects_unknown_key_and_model():
    with pytest.raises(ConfigError, match="unknown config key 'ecg_vit_tiny.depht'"):
        create_model("ecg_vit_tiny", depht=2)
    with pytest.raises(ConfigError, match="unknown model 'ecg_vit_huge'"):
        create_model("ecg_vit_huge")
    with pytest.raises(ConfigError, match="not a multiple of patch_size"):
        create_model("ecg_vit_tiny", patch_size=75, n_samples=2500 + 1)


def test_demo_defaults_equal_the_config_defaults():
    # Registry overrides are shallow: a nested `encoder={...}` override starts from the dataclass
    # defaults, so those must be the demo values.
    assert get_model_config("ecg_vit_tiny") == ECGViTConfig()
    assert get_model_config("cmr_encoder_demo") == CMREncoderConfig()
    assert get_model_config("ecg_mae_tiny").encoder == ECGViTConfig()
    assert get_model_config("cardiac_clip_demo").ecg.model == "ecg_vit_tiny"


# --- ECG encoders --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ecg_vit_tiny", "ecg_resnet1d"])
def test_absent_lead_values_do_not_change_the_output(name):
    model = tiny_model(name).eval()
    ecg = torch.randn(2, 12, 500)
    lead_mask = torch.ones(2, 12, dtype=torch.bool)
    lead_mask[:, [2, 7]] = False
    changed = ecg.clone()
    changed[:, [2, 7]] = 100 * torch.randn(2, 2, 500)
    with torch.no_grad():
        a, b = model(ecg, lead_mask), model(changed, lead_mask)
        c = model(changed)  # without the mask the values do matter
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_clip_ecg_embedding_ignores_absent_leads():
    model = tiny_model("cardiac_clip_demo").eval()
    batch = synthetic_batch(model, 2, torch.Generator().manual_seed(0))
    batch["ecg_lead_mask"][:, 6:] = False
    other = dict(batch, ecg=batch["ecg"].clone())
    other["ecg"][:, 6:] = 5.0
    with torch.no_grad():
        torch.testing.assert_close(model.encode_ecg(batch), model.encode_ecg(other), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["ecg_vit_tiny", "ecg_resnet1d"])
def test_film_is_identity_at_initialisation(name):
    plain = tiny_model(name).eval()
    film = tiny_model(name, film=True, n_demographics=3).eval()
    missing, unexpected = film.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("film.") for k in missing)
    ecg = torch.randn(2, 12, 500)
    with torch.no_grad():
        reference = plain(ecg)
        for demographics in (torch.zeros(2, 3), torch.randn(2, 3) * 5):
            torch.testing.assert_close(film(ecg, demographics=demographics), reference, rtol=0, atol=0)
    with pytest.raises(ValueError, match="pass demographics"):
        film(ecg)
    with pytest.raises(ValueError, match="film"):
        plain(ecg, demographics=torch.zeros(2, 3))


def test_film_conditions_once_trained():
    model = tiny_model("ecg_vit_tiny", film=True, n_demographics=2).eval()
    torch.nn.init.normal_(model.film.mlp[-1].weight)
    ecg = torch.randn(1, 12, 500)
    with torch.no_grad():
        assert not torch.allclose(model(ecg, demographics=torch.zeros(1, 2)), model(ecg, demographics=torch.ones(1, 2)))


def test_vit_accepts_shorter_input_and_rejects_bad_shapes():
    model = tiny_model("ecg_vit_tiny").eval()
    assert model.forward_features(torch.randn(1, 12, 300)).shape == (1, 1 + 12 * 3, 64)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        model(torch.randn(1, 12, 250))
    with pytest.raises(ValueError, match="samples"):
        model(torch.randn(1, 12, 600))
    with pytest.raises(ValueError, match=r"\(batch, 12, samples\)"):
        model(torch.randn(1, 8, 500))
    with pytest.raises(ValueError, match="lead_mask"):
        model(torch.randn(1, 12, 500), torch.ones(1, 8, dtype=torch.bool))


def test_attention_implementations_agree():
    sdpa = tiny_model("ecg_vit_tiny", attention="sdpa", heads=2).eval()
    math_ = tiny_model("ecg_vit_tiny", attention="math", heads=2).eval()
    math_.load_state_dict(sdpa.state_dict())
    ecg = torch.randn(3, 12, 500)
    with torch.no_grad():
        torch.testing.assert_close(math_(ecg), sdpa(ecg), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="attention"):
        create_model("ecg_vit_tiny", attention="flash")


def test_resnet_tokens_and_clip_projections():
    resnet = tiny_model("ecg_resnet1d")
    # 500 samples -> 250 (strided stem) -> 125 (max-pool) -> 63 (second stage, stride 2, padded)
    assert resnet.forward_features(torch.randn(2, 12, 500)).shape == (2, 63, 16)
    overrides = tiny_overrides("cardiac_clip_demo")
    mlp = create_model("cardiac_clip_demo", **overrides, projection="mlp", embed_dim=8)
    assert mlp(synthetic_batch(mlp, 2, torch.Generator().manual_seed(0)))["ecg"].shape == (2, 8)
    with pytest.raises(ConfigError, match="projection 'none'"):
        create_model("cardiac_clip_demo", **overrides, projection="none", embed_dim=8)


def test_paper_vit_large_tokens():
    config = get_model_config("ecg_vit_large")
    assert (config.width, config.depth, config.heads, config.embed_dim) == (1024, 24, 16, 256)
    assert config.n_tokens == 600  # 12 leads x 5000 samples / 100


# --- MAE -----------------------------------------------------------------------------------------------------------

def test_mae_mask_ratio_and_absent_leads():
    model = tiny_model("ecg_mae_tiny", mask_ratio=0.75, contrastive_weight=0.0)
    n_tokens = 12 * 5
    assert model.n_keep == round(n_tokens * 0.25) == 15
    ecg = torch.randn(4, 12, 500)
    lead_mask = torch.ones(4, 12, dtype=torch.bool)
    lead_mask[:, :4] = False
    present = model.patch_weights(ecg, lead_mask, None)
    latent, ids_restore, masked = model.encode_masked(ecg, lead_mask, None, present)
    assert latent.shape == (4, 1 + 15, 64)
    assert (masked.sum(dim=1) == n_tokens - 15).all()
    assert masked[~present].all()  # patches of absent leads are never visible
    assert model.decode(latent, ids_restore).shape == (4, n_tokens, 100)


def test_mae_patch_weights_follow_sample_mask():
    model = tiny_model("ecg_mae_tiny")
    sample_mask = torch.ones(1, 500, dtype=torch.bool)
    sample_mask[0, 450:] = False  # the last patch of every lead is partly invalid
    weights = model.patch_weights(torch.zeros(1, 12, 500), None, sample_mask)
    assert weights.view(12, 5)[:, :4].all() and not weights.view(12, 5)[:, 4].any()


def test_mae_reconstruction_loss_hand_computed():
    model = tiny_model("ecg_mae_tiny", norm_target=False)
    ecg = torch.zeros(1, 12, 500)
    prediction = torch.zeros(1, 60, 100)
    prediction[0, 0] = 2.0   # masked, present: error 4 per sample
    prediction[0, 1] = 10.0  # visible: not counted
    masked = torch.ones(1, 60, dtype=torch.bool)
    masked[0, 1] = False
    present = torch.ones(1, 60, dtype=torch.bool)
    loss = model.reconstruction_loss(ecg, prediction, masked, present)
    assert loss.item() == pytest.approx(4.0 / 59)


def test_mae_loss_terms_and_hybrid_switch():
    batch = {"ecg": torch.randn(4, 12, 500)}
    assert set(tiny_model("ecg_mae_tiny", contrastive_weight=0.0)(batch)) == {"loss_mae"}
    hybrid = tiny_model("ecg_mae_tiny", contrastive_weight=0.5)(batch)
    assert set(hybrid) == {"loss_mae", "loss_contrastive"}
    # InfoNCE of 4 pairs is at most about log(4) times the weight at initialisation
    assert 0 < hybrid["loss_contrastive"].item() < 0.5 * (math.log(4) + 1)


def test_mae_overfits_a_tiny_batch():
    # The same two-tone signal in every row: the masked patches are a function of their position.
    torch.manual_seed(0)
    t = torch.linspace(0, 2 * math.pi, 500)
    ecg = torch.stack([torch.sin(3 * t + lead) + 0.5 * torch.sin(7 * t + 2 * lead) for lead in range(12)]).expand(4, 12, 500)
    model = tiny_model("ecg_mae_tiny", contrastive_weight=0.0, mask_ratio=0.6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = model({"ecg": ecg})["loss_mae"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_info_nce_hand_computed():
    a = torch.eye(3)
    loss = info_nce(a, a, 10.0)
    expected = -math.log(math.exp(10) / (math.exp(10) + 2))
    assert loss.item() == pytest.approx(expected, rel=1e-3)


# --- CMR -----------------------------------------------------------------------------------------------------------

def test_cmr_encoder_resizes_and_checks_shape():
    model = tiny_model("cmr_encoder_demo").eval()
    assert model(torch.rand(2, 1, 4, 48, 40)).shape == (2, 32)
    assert model.prepare_input(torch.rand(2, 1, 4, 48, 40)).shape == (2, 4, 32, 32)
    with pytest.raises(ValueError, match="4 frames"):
        model(torch.rand(2, 1, 5, 32, 32))


def test_cmr_encoder_vit_backbone_feature_map():
    config = CMREncoderConfig(backbone="vit_tiny_patch16_224", frames=4, img_size=32, pass_img_size=True, embed_dim=16,
                              backbone_kwargs={"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 1})
    model = CMREncoder(config)
    features = model.forward_features(torch.rand(2, 1, 4, 32, 32))
    assert model.feature_map(features).shape == (2, 32, 4, 4)
    assert model.forward_head(features).shape == (2, 16)
    mim = CMRMaskedModel(CMRMaskedModelConfig(views=["sa"], encoders={"sa": config}, mask_patch_size=8, decoder_width=8))
    losses = mim({"cmr_sa": torch.rand(2, 1, 4, 32, 32)})
    assert set(losses) == {"loss_mim_sa"} and torch.isfinite(losses["loss_mim_sa"])


def test_cmr_encoder_config_errors():
    with pytest.raises(ConfigError, match="pass_img_size"):
        CMREncoder(CMREncoderConfig(backbone="vit_tiny_patch16_224", img_size=32, frames=4))
    with pytest.raises(ConfigError, match="no_such_net"):
        CMREncoder(CMREncoderConfig(backbone="no_such_net"))
    with pytest.raises(ConfigError, match="in_chans"):
        CMREncoder(CMREncoderConfig(backbone_kwargs={"in_chans": 3}))


def test_mim_mask_ratio_and_missing_views():
    model = tiny_model("cmr_mim_demo", mask_ratio=0.25)
    hidden = model.random_mask(3, 32, torch.device("cpu"))
    assert hidden.shape == (3, 1, 32, 32)
    assert (hidden.float().mean(dim=(1, 2, 3)) == 0.25).all()
    batch = synthetic_batch(model, 3, torch.Generator().manual_seed(0))
    batch["has_la_4ch"] = torch.zeros(3, dtype=torch.bool)
    losses = model(batch)
    assert losses["loss_mim_la_4ch"].item() == 0.0 and losses["loss_mim_sa"].item() > 0
    assert losses["loss_contrastive_sa_la_4ch"].item() == 0.0  # no subject has both views


# --- CLIP ----------------------------------------------------------------------------------------------------------

def test_clip_embeddings_are_normalised_with_fixed_or_learned_temperature():
    model = tiny_model("cardiac_clip_demo")
    out = model(synthetic_batch(model, 4, torch.Generator().manual_seed(0)))
    for key in ("ecg", "cmr_sa", "cmr_la_4ch"):
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(4))
    assert out["logit_scale"].item() == pytest.approx(10.0)
    assert model.logit_scale.requires_grad
    assert not tiny_model("cardiac_clip_demo", learnable_temperature=False).logit_scale.requires_grad


def test_clip_frozen_cmr_has_no_gradients():
    model = tiny_model("cardiac_clip_demo", freeze_cmr=True).train()
    assert model.training and not any(m.training for m in model.cmr_encoders.modules())
    batch = synthetic_batch(model, 4, torch.Generator().manual_seed(0))
    sum(step_losses(model, batch).values()).backward()
    assert all(p.grad is None for p in model.cmr_encoders.parameters())
    assert all(p.grad is not None for p in model.cmr_projections.parameters())
    assert any(p.grad is not None for p in model.ecg_encoder.parameters())


def test_clip_views_subset_and_errors():
    model = tiny_model("cardiac_clip_demo", views=["sa"])
    out = model(synthetic_batch(model, 2, torch.Generator().manual_seed(0)))
    assert set(out) == {"ecg", "cmr_sa", "logit_scale"}
    with pytest.raises(ValueError, match="la_4ch"):
        model.encode_cmr({}, "la_4ch")
    with pytest.raises(ConfigError, match="no cmr encoder spec"):
        create_model("cardiac_clip_demo", views=["sa", "la_2ch"])
    with pytest.raises(ConfigError, match="not an ECG encoder"):
        create_model("cardiac_clip_demo", ecg={"model": "cmr_encoder_demo"})


def test_clip_init_from_saved_encoders(tmp_path):
    mae = tiny_model("ecg_mae_tiny")
    mae.save_pretrained(tmp_path / "mae")
    mim = tiny_model("cmr_mim_demo")
    mim.save_pretrained(tmp_path / "mim")
    # The CLIP model asks for the demo encoders by name; the saved folders fix their size.
    clip = create_model("cardiac_clip_demo", ecg={"model": "ecg_vit_tiny", "init_from": str(tmp_path / "mae")},
                        cmr={"sa": {"model": "cmr_encoder_demo", "init_from": str(tmp_path / "mim")},
                             "la_4ch": {"model": "cmr_encoder_demo", "overrides": tiny_overrides("cmr_encoder_demo")}})
    for key, value in mae.encoder.state_dict().items():
        torch.testing.assert_close(clip.ecg_encoder.state_dict()[key], value, rtol=0, atol=0)
    for key, value in mim.encoders["sa"].state_dict().items():
        torch.testing.assert_close(clip.cmr_encoders["sa"].state_dict()[key], value, rtol=0, atol=0)
    assert clip.config.ecg.overrides == to_dict(mae.encoder.config)
    # Saved with the resolved config, the model reloads without the init folders.
    clip.save_pretrained(tmp_path / "clip")
    for folder in ("mae", "mim"):
        for f in (tmp_path / folder).iterdir():
            f.unlink()
    reloaded = load_pretrained(tmp_path / "clip")
    assert to_dict(reloaded.config) == to_dict(clip.config)


def test_clip_init_from_errors(tmp_path):
    tiny_model("ecg_mae_tiny").save_pretrained(tmp_path / "mae")
    tiny_model("cmr_encoder_demo").save_pretrained(tmp_path / "cmr")
    with pytest.raises(InputError, match=r"mae: the saved encoder has width=64 but ecg.overrides sets width=128"):
        create_model("cardiac_clip_demo", ecg={"model": "ecg_vit_tiny", "overrides": {"width": 128},
                                               "init_from": str(tmp_path / "mae")})
    with pytest.raises(InputError, match=r"cmr: holds a CMREncoder, not an ECG encoder"):
        create_model("cardiac_clip_demo", ecg={"model": "ecg_vit_tiny", "init_from": str(tmp_path / "cmr")})
    with pytest.raises(InputError, match=r"mae: holds a ECGMAE, not a CMR encoder"):
        create_model("cardiac_clip_demo", cmr={"sa": {"model": "cmr_encoder_demo", "init_from": str(tmp_path / "mae")},
                                               "la_4ch": {"model": "cmr_encoder_demo"}})
    with pytest.raises(InputError, match=r"missing: not a saved model"):
        create_model("cardiac_clip_demo", ecg={"model": "ecg_vit_tiny", "init_from": str(tmp_path / "missing")})
    with pytest.raises(InputError, match="is a ResNet1DConfig"):
        create_model("cardiac_clip_demo", ecg={"model": "ecg_resnet1d", "init_from": str(tmp_path / "mae")})


# --- paper scale ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_paper_models_on_meta_device():
    specs = load_model_specs("configs/paper/models.yaml")
    counts = {}
    for name, spec in specs.items():
        with torch.device("meta"):
            model = create_from_spec(spec)
        counts[name] = count_parameters(model)
        assert all(p.is_meta for p in model.parameters())
    print({k: f"{v / 1e6:.1f}M" for k, v in counts.items()})
    assert 280e6 <= counts["ecg_encoder"] <= 330e6  # ViT-L: 24 x 12.6M + embeddings
    assert 85e6 <= counts["cmr_encoder_la_4ch"] <= 90e6  # Swin-B with 50 input channels
    assert counts["alignment"] == pytest.approx(counts["ecg_encoder"] + counts["cmr_encoder_sa"]
                                                + counts["cmr_encoder_la_4ch"] + 3 * 256 * 256 + 1, rel=1e-3)


def test_model_specs_file_errors(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("enc:\n  model: ecg_vit_tiny\n  overides: {}\n")
    with pytest.raises(ConfigError, match=r"models.yaml: unknown config key 'enc.overides'"):
        load_model_specs(bad)
    bad.write_text("enc: ecg_vit_tiny\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_model_specs(bad)
