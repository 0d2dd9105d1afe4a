"""Preview pictures of cines: 8-bit frames, animated GIFs and PNG frame strips, marked when generated.

A cine here is (frames, H, W) intensities in the training set's scale, [0, 1]
(values outside are clipped, NaN shown black). `frames_to_uint8` turns frames
into 8-bit pixels, upscaled by pixel repetition or bicubic interpolation;
`cine_frames_uint8` does so for display and stamps generated frames;
`cine_gif` writes a looping animated GIF and `cine_sprite_png` a PNG sprite
sheet (all frames side by side, which the review app's player steps through
and ``cardiacnets generate`` writes as ``frames.png``). `png_bytes` and
`gif_bytes` encode any 8-bit picture the same way.

Generated pictures are marked twice. In the pixels: the SYNTHETIC label of
`cardiacnets.io.stamp` (the same one the DICOM writer burns in) in the top-left
corner of every frame, cut at the edge of frames narrower than 56 pixels. In
the file: PNG text chunks `synthetic_png_text` (``Synthetic`` = ``true``,
``Description`` = `SYNTHETIC_STATEMENT`, ``Software`` = ``cardiacnets
<version>``) and a GIF comment extension `SYNTHETIC_GIF_COMMENT` holding the
same statement. Pictures of real images carry neither.
"""

from __future__ import annotations

import io

import numpy as np
from einops import rearrange

import cardiacnets
from cardiacnets.io.stamp import SYNTHETIC_STATEMENT, stamp_synthetic

SOFTWARE = f"cardiacnets {cardiacnets.__version__}"
#: The GIF comment extension of a generated GIF.
SYNTHETIC_GIF_COMMENT = f"SYNTHETIC: {SYNTHETIC_STATEMENT} ({SOFTWARE})"


def synthetic_png_text() -> dict[str, str]:
    """The PNG text chunks (tEXt, key → value) that mark a generated picture.

    Returns:
        ``{"Synthetic": "true", "Description": SYNTHETIC_STATEMENT, "Software": "cardiacnets <version>"}``.
    """
    return {"Synthetic": "true", "Description": SYNTHETIC_STATEMENT, "Software": SOFTWARE}


def frames_to_uint8(frames: np.ndarray, *, scale: int = 1, smooth: bool = False) -> np.ndarray:
    """[0, 1] intensities to 8-bit pixels, upscaled.

    Args:
        frames: (..., H, W) intensities; values outside [0, 1] are clipped, NaN becomes 0.
        scale: integer upscaling factor of both axes.
        smooth: bicubic interpolation (display of small model crops); otherwise
            each pixel is repeated ``scale`` times (exact pixels, for comparisons).

    Returns:
        (..., H * scale, W * scale) uint8, 0 for 0 and 255 for 1.

    Raises:
        ValueError: ``frames`` has fewer than 2 dimensions or ``scale < 1``.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim < 2:
        raise ValueError(f"frames must be (..., H, W), got shape {frames.shape}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    pixels = np.round(np.clip(np.nan_to_num(frames, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)
    if scale == 1:
        return pixels
    if not smooth:
        return pixels.repeat(scale, axis=-2).repeat(scale, axis=-1)
    from PIL import Image

    height, width = frames.shape[-2] * scale, frames.shape[-1] * scale
    flat = pixels.reshape(-1, *pixels.shape[-2:])
    out = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC)) for f in flat])
    return out.reshape(*pixels.shape[:-2], height, width)


def stamp_frames(frames: np.ndarray) -> np.ndarray:
    """The SYNTHETIC label burned into every frame of 8-bit frames (white on black, cut at small frames' edge).

    Args:
        frames: (..., H, W) uint8.

    Returns:
        A stamped copy.
    """
    frames = np.asarray(frames, dtype=np.uint8)
    flat = frames.reshape(-1, *frames.shape[-2:])
    out = np.stack([stamp_synthetic(f, value=255, background=0, clip=True) for f in flat])
    return out.reshape(frames.shape)


def cine_frames_uint8(cine: np.ndarray, *, scale: int = 3, synthetic: bool = False) -> np.ndarray:
    """Display frames of a cine: 8-bit, upscaled (bicubic), stamped when generated.

    Args:
        cine: (frames, H, W) intensities, training-set scale ([0, 1]); values
            outside are clipped.
        scale: integer upscaling factor, so the small model crops are legible
            and the stamp fits.
        synthetic: stamp ``SYNTHETIC`` in the top-left corner of every frame.

    Returns:
        (frames, H * scale, W * scale) uint8.

    Raises:
        ValueError: when ``cine`` is not 3-D or has no frames.
    """
    cine = np.asarray(cine, dtype=np.float32)
    if cine.ndim != 3 or cine.shape[0] == 0:
        raise ValueError(f"cine must be (frames, H, W) with at least one frame, got {cine.shape}")
    frames = frames_to_uint8(cine, scale=scale, smooth=True)
    return stamp_frames(frames) if synthetic else frames


def png_bytes(image: np.ndarray, *, synthetic: bool) -> bytes:
    """Encode an 8-bit picture as PNG, with the synthetic text chunks when generated.

    Args:
        image: (H, W) grey or (H, W, 3) RGB uint8, already stamped if it should be.
        synthetic: add the `synthetic_png_text` chunks.

    Returns:
        PNG bytes.
    """
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if synthetic:
        for key, value in synthetic_png_text().items():
            info.add_text(key, value)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG", pnginfo=info,
                                                                      optimize=False)
    return buffer.getvalue()


def gif_bytes(frames: np.ndarray, *, frame_ms: float, synthetic: bool) -> bytes:
    """Encode 8-bit grey frames as a looping animated GIF, with the synthetic comment when generated.

    Args:
        frames: (frames, H, W) uint8, already stamped if they should be.
        frame_ms: display time of each frame (GIF stores centiseconds; at least 20 ms).
        synthetic: add the `SYNTHETIC_GIF_COMMENT` comment extension.

    Returns:
        GIF bytes.
    """
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    extra = {"comment": SYNTHETIC_GIF_COMMENT} if synthetic else {}
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=max(20, int(round(frame_ms))), disposal=1, **extra)
    return buffer.getvalue()


def cine_sprite_png(cine: np.ndarray, *, scale: int = 3, synthetic: bool = False) -> bytes:
    """A cine as one PNG with its frames side by side (the review page's player steps through it).

    Args:
        cine: (frames, H, W) intensities in [0, 1].
        scale: upscaling factor of each frame.
        synthetic: stamp every frame ``SYNTHETIC`` and add the synthetic text chunks.

    Returns:
        PNG bytes of a (H * scale, frames * W * scale) grey image.
    """
    frames = cine_frames_uint8(cine, scale=scale, synthetic=synthetic)
    return png_bytes(rearrange(frames, "f h w -> h (f w)"), synthetic=synthetic)


def cine_gif(cine: np.ndarray, *, frame_ms: float = 40.0, scale: int = 3, synthetic: bool = False) -> bytes:
    """A cine as a looping animated GIF.

    Args:
        cine: (frames, H, W) intensities in [0, 1].
        frame_ms: display time of each frame.
        scale: upscaling factor of each frame.
        synthetic: stamp every frame ``SYNTHETIC`` and add the synthetic comment.

    Returns:
        GIF bytes.
    """
    return gif_bytes(cine_frames_uint8(cine, scale=scale, synthetic=synthetic), frame_ms=frame_ms,
                     synthetic=synthetic)
