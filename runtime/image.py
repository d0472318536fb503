"""Image input policy: what the runtime accepts, and reading image files.

Policy (applies to every entry point):
- dtype must be uint8 (values 0..255); any other dtype is rejected, not rescaled by guesswork.
- HxWx3 is RGB. HxW and HxWx1 (grayscale) are replicated to three channels.
  HxWx4 (RGBA) has its alpha channel dropped (no compositing). Other channel counts are rejected.
- Rank other than 2 or 3, or an empty side, is rejected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import InvalidImageError

SAMPLE_PREFIX = "sample:"


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as a contiguous HxWx3 uint8 RGB array.

    Args:
        image (np.ndarray): HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) uint8 in [0,255].
    Returns:
        np.ndarray: HxWx3 uint8.
    Raises:
        InvalidImageError: wrong type, dtype, rank, channel count or an empty side.
    """
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InvalidImageError(
            f"image dtype must be uint8 (0..255), got {image.dtype}; convert first, "
            "e.g. (img * 255).round().astype(np.uint8) for floats in [0,1]"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise InvalidImageError(f"image must be HxW or HxWxC, got rank {image.ndim} {image.shape}")
    h, w, c = image.shape
    if h == 0 or w == 0:
        raise InvalidImageError(f"image has an empty side: {image.shape}")
    if c == 1:
        image = np.repeat(image, 3, axis=2)
    elif c == 4:
        image = image[:, :, :3]
    elif c != 3:
        raise InvalidImageError(f"image must have 1, 3 or 4 channels (gray, RGB, RGBA), got {c}")
    return np.ascontiguousarray(image)


def load_image(source: str | Path) -> np.ndarray:
    """Read an image file (any format Pillow decodes) or a named sample as HxWx3 uint8 RGB.

    Args:
        source: a file path, or ``sample:NAME`` for a scikit-image sample (``sample:astronaut``).
    Raises:
        InvalidImageError: the file is missing, not an image, or truncated/corrupt.
    """
    source = str(source)
    if source.startswith(SAMPLE_PREFIX):
        return _load_sample(source[len(SAMPLE_PREFIX) :])
    from PIL import Image, UnidentifiedImageError

    path = Path(source)
    if not path.is_file():
        raise InvalidImageError(f"image file {source!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "I;16", "F"):
                raise InvalidImageError(f"{source!r} is a {im.mode} (non-8-bit) image")
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidImageError(f"cannot decode image {source!r}: {e}") from e
    return np.asarray(rgb, dtype=np.uint8).copy()


def _load_sample(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError as e:
        raise InvalidImageError("sample images need scikit-image: pip install scikit-image") from e
    loader = getattr(data, name, None)
    if loader is None or not callable(loader):
        raise InvalidImageError(f"unknown sample image {name!r} (try astronaut, chelsea, coffee)")
    return as_rgb_uint8(np.asarray(loader()))
