"""ECG-conditioned generation of cine CMR (CardiacNets, arXiv 2411.13602): the direct and the anatomy-first generator.

The direct generator (latent diffusion of cines):

- `cardiacnets.generation.vae`: the frame autoencoder (diffusers ``AutoencoderKL``), its losses,
  cine encoding/decoding and the latent scaling factor;
- `cardiacnets.generation.conditioning`: the frozen aligned ECG encoder as the condition;
- `cardiacnets.generation.denoiser`: the spatio-temporal UNet over cine latents (`CineDenoiser`);
- `cardiacnets.generation.diffusion`: the noise schedule, training timesteps and min-SNR-γ weights;
- `cardiacnets.generation.latent_cache`: the frozen encoders' outputs, computed once per split;
- `cardiacnets.generation.index_readout`: the ridge read-out of CMR indices in the denoiser's condition;
- `cardiacnets.generation.pipeline`: `ECGToCMRPipeline`, the diffusers pipeline that samples cines.

The anatomy-first generator: `shape_model` (PCA shape-and-motion model of label
cines), `readout` (ECG → CMR index estimates), `anatomy_prior` (diffusion over
shape codes), `image_decoder` (label-conditioned latent image denoiser) and
`anatomy_pipeline` (`AnatomyFirstPipeline`).

Both: `request` (one path from an ECG file to a generation), `outputs` (NIfTI,
DICOM marked synthetic, GIF, PNG and provenance files) and `zoo` (untrained
pipelines from registry names). Importing this package registers its models
(``cmr_vae_*``, ``cine_unet3d_*``, ``anatomy_prior_*``, ``anatomy_image_unet_*``)
with `cardiacnets.models.registry`. The training stages are in `cardiacnets.train`
(``vae``, ``diffusion``, ``anatomy_image``, ``anatomy``).
"""

from cardiacnets.generation import anatomy_prior, image_decoder  # noqa: F401  (import-time model registration)
from cardiacnets.generation.conditioning import ECGCondition, ECGConditionEncoder
from cardiacnets.generation.denoiser import CineDenoiser, CineDenoiserConfig
from cardiacnets.generation.pipeline import ECGToCMROutput, ECGToCMRPipeline
from cardiacnets.generation.vae import CMRVAEConfig, build_cmr_vae

__all__ = ["CMRVAEConfig", "CineDenoiser", "CineDenoiserConfig", "ECGCondition", "ECGConditionEncoder",
           "ECGToCMROutput", "ECGToCMRPipeline", "build_cmr_vae"]
