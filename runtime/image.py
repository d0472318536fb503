"""Image input policy: what the runtime accepts, and reading image files.

Policy (applies to every entry point):
- dtype must be uint8 (values 0..255); any other dtype is rejected, not rescaled by guesswork.
- HxWx3 is RGB. HxW and HxWx1 (grayscale) are replicated to three channels.
  HxWx4 (RGBA) has its alpha channel dropped (no compositing). Other channel counts are rejected.
- Rank other than 2 or 3, or an empty side, is rejected.
- Decoded files and bytes (``load_image``, ``decode_image_bytes``) over ``max_pixels`` (width x
  height, default ``DEFAULT_MAX_PIXELS``; 0: no limit) are refused from the header, before any
  pixel is decoded, so a small "decompression bomb" file cannot take gigabytes of memory. The
  programs' flag is ``--max-pixels N``. Pillow's own guard (twice ``PIL.Image.MAX_IMAGE_PIXELS``)
  still refuses images beyond it when the limit is off.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from runtime.errors import InvalidImageError

SAMPLE_PREFIX = "sample:"
DEFAULT_MAX_PIXELS = 50_000_000  # width x height; 0 = no limit (--max-pixels)
HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


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


def check_pixels(width: int, height: int, max_pixels: int, what: str) -> None:
    """Refuse an image of ``width`` x ``height`` over ``max_pixels`` (0: no limit).

    Raises:
        InvalidImageError: naming ``what``, the size, the limit and the ``--max-pixels`` flag.
    """
    if width <= 0 or height <= 0:
        raise InvalidImageError(f"{what} has an empty side: {width}x{height}")
    if max_pixels and width * height > max_pixels:
        raise InvalidImageError(
            f"{what} is {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,}; raise it with --max-pixels N (0: no limit)"
        )


def _decode(fp, max_pixels: int, what: str) -> np.ndarray:
    """Pillow decode of an open file or buffer: header size checked first, then pixels."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                check_pixels(im.size[0], im.size[1], max_pixels, what)
                im.load()
                if im.mode in HIGH_BIT_MODES:
                    raise InvalidImageError(f"{what} is a {im.mode} (non-8-bit) image")
                rgb = im.convert("RGB")
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's guard fires in Image.open, before ours
        if max_pixels:
            raise InvalidImageError(
                f"{what} is over the limit of {max_pixels:,} pixels ({e}); raise it with "
                "--max-pixels N (0: no limit)"
            ) from None
        raise InvalidImageError(f"{what} is refused by Pillow's size guard: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        # UnidentifiedImageError is an OSError; truncated data raises OSError or EOFError
        raise InvalidImageError(f"cannot decode {what}: {e or type(e).__name__}") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


def load_image(source: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file (any format Pillow decodes) or a named sample as HxWx3 uint8 RGB.

    Args:
        source: a file path, or ``sample:NAME`` for a scikit-image sample (``sample:astronaut``).
        max_pixels: refuse images over this many pixels (width x height), from the header,
            before decoding; 0: no limit.
    Raises:
        InvalidImageError: the file is missing, a folder, empty, not an image, truncated or
            corrupt, non-8-bit, or over ``max_pixels``.
    """
    source = str(source)
    if source.startswith(SAMPLE_PREFIX):
        image = _load_sample(source[len(SAMPLE_PREFIX) :])
        check_pixels(image.shape[1], image.shape[0], max_pixels, f"sample {source!r}")
        return image
    path = Path(source)
    try:
        if path.is_dir():
            raise InvalidImageError(f"image {source!r} is a folder, not an image file")
        if not path.is_file():
            raise InvalidImageError(f"image file {source!r} does not exist")
        if path.stat().st_size == 0:
            raise InvalidImageError(f"image file {source!r} is empty")
        with open(path, "rb") as fp:
            return _decode(fp, max_pixels, f"image {source!r}")
    except OSError as e:  # unreadable (permission), a name too long, ...
        raise InvalidImageError(f"cannot read image {source!r}: {e.strerror or e}") from None


def decode_image_bytes(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, what: str = "the image"
) -> np.ndarray:
    """Image file bytes (PNG, JPEG, any format Pillow reads) -> HxWx3 uint8 RGB, as
    :func:`load_image` (the size checked from the header before decoding).

    Raises:
        InvalidImageError: empty, not an image, truncated, non-8-bit or over ``max_pixels``.
    """
    if not data:
        raise InvalidImageError(f"{what} is empty (0 bytes)")
    return _decode(io.BytesIO(data), max_pixels, what)


def _load_sample(name: str) -> np.ndarray:
    try:
        from skimage import data
    except ImportError as e:
        raise InvalidImageError("sample images need scikit-image: pip install scikit-image") from e
    loader = getattr(data, name, None)
    if loader is None or not callable(loader):
        raise InvalidImageError(f"unknown sample image {name!r} (try astronaut, chelsea, coffee)")
    return as_rgb_uint8(np.asarray(loader()))
