"""ECG-conditioned latent diffusion of cine CMR (CardiacNets, arXiv 2411.13602).

- `cardiacnets.generation.vae`: the frame autoencoder (diffusers ``AutoencoderKL``), its losses,
  cine encoding/decoding and the latent scaling factor;
- `cardiacnets.generation.conditioning`: the frozen aligned ECG encoder as the condition;
- `cardiacnets.generation.denoiser`: the spatio-temporal UNet over cine latents (`CineDenoiser`);
- `cardiacnets.generation.pipeline`: `ECGToCMRPipeline`, the diffusers pipeline that samples cines;
- `cardiacnets.generation.outputs`: NIfTI, DICOM (marked synthetic), GIF, PNG and provenance files.

The training stages ``vae`` and ``diffusion`` are in `cardiacnets.train.generation_tasks`.
"""

from cardiacnets.generation.conditioning import ECGCondition, ECGConditionEncoder
from cardiacnets.generation.denoiser import CineDenoiser, CineDenoiserConfig
from cardiacnets.generation.pipeline import ECGToCMROutput, ECGToCMRPipeline
from cardiacnets.generation.vae import CMRVAEConfig, build_cmr_vae

__all__ = ["CMRVAEConfig", "CineDenoiser", "CineDenoiserConfig", "ECGCondition", "ECGConditionEncoder",
           "ECGToCMROutput", "ECGToCMRPipeline", "build_cmr_vae"]
