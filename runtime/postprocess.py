"""Logits to label maps and colour overlays, in numpy.

The label maps themselves are ``runtime.label_map``'s (same sampling as
``torch.nn.functional.interpolate(mode='bilinear', align_corners=False)``); this module keeps
the dense interpolation matrix and the int32 reference labels for callers that want them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.errors import ConfigError
from runtime.label_map import UNKNOWN, label_map, taps

UNKNOWN_NAME = "unknown"  # legend entry of pixels below the score threshold
UNKNOWN_COLOUR = np.array([128, 128, 128], dtype=np.uint8)  # its swatch and label-PNG colour


def bilinear_matrix(
    out_len: int, in_len: int, span: int | None = None, dtype=np.float32
) -> np.ndarray:
    """Interpolation matrix A (out_len x in_len, ``dtype``) with ``y = A @ x`` bilinear,
    align_corners=False: the dense form of ``runtime.label_map.taps``.

    Args:
        out_len: number of output samples to return (the first ``out_len`` of ``span``).
        in_len: number of input samples (feature cells).
        span: length of the full output grid that the input spans (default ``out_len``); use the
            padded size when the input covers a padded image and only the first rows are wanted.
    """
    t = taps(out_len, in_len, span)
    a = np.zeros((out_len, in_len), dtype=dtype)
    rows = np.arange(out_len)
    np.add.at(a, (rows, t.i0), t.w0.astype(dtype))
    np.add.at(a, (rows, t.i1), t.w1.astype(dtype))
    return a


def upsample_argmax(
    logits: np.ndarray,
    out_hw: tuple[int, int],
    span_hw: tuple[int, int] | None = None,
    background_thd: float = 0.0,
) -> np.ndarray:
    """Argmax over classes of bilinearly upsampled logits: the reference path of
    ``runtime.label_map.label_map`` (``method="exact"``), as int32.

    Args:
        logits (np.ndarray): float32 [C, h, w].
        out_hw: (H, W) output size, pixels.
        span_hw: (Hp, Wp) size the logits span when they cover a padded image (default out_hw).
        background_thd: in [0, 1); where the top class's softmax probability (over the upsampled
            logits) is below it, the label is 0 (the vocabulary's first class, "background"), as
            SCLIP / ClearCLIP / NACLIP's ``prob_thd``. 0 = off.
    Returns:
        np.ndarray: int32 [H, W] class indices in [0, C).
    """
    out = label_map(logits, out_hw, span_hw, background_thd=background_thd, method="exact")
    return out.labels.astype(np.int32, copy=False)


def palette(num_classes: int) -> np.ndarray:
    """Deterministic, well-separated colours: uint8 [num_classes, 3] (PASCAL VOC bit pattern)."""
    idx = np.arange(1, num_classes + 1)
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for bit in range(8):
        for ch in range(3):
            colours[:, ch] |= (((idx >> (3 * bit + ch)) & 1) << (7 - bit)).astype(np.uint8)
    return colours


def overlay(
    image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Blend a colour-coded label map over an image.

    Args:
        image (np.ndarray): HxWx3 uint8 RGB.
        labels (np.ndarray): HxW int, values in [0, len(colours)), or ``UNKNOWN`` (255: left
            unblended, the image shows through).
        colours (np.ndarray): uint8 [C, 3].
        alpha: weight of the label colours, in [0, 1].
    Returns:
        np.ndarray: HxWx3 uint8.
    """
    unknown = unknown_mask(labels, len(colours))
    table = colours if unknown is None else with_unknown(colours)
    mix = (1.0 - alpha) * image.astype(np.float32) + alpha * table[labels].astype(np.float32)
    out = np.clip(mix + 0.5, 0, 255).astype(np.uint8)
    if unknown is not None:
        out[unknown] = image[unknown]
    return out


def unknown_mask(labels: np.ndarray, num_classes: int) -> np.ndarray | None:
    """HxW bool of ``UNKNOWN`` pixels, or None when there are none (or 255 is a real class)."""
    if num_classes > UNKNOWN:
        return None
    mask = labels == UNKNOWN
    return mask if mask.any() else None


def with_unknown(colours: np.ndarray) -> np.ndarray:
    """uint8 [256, 3]: ``colours`` [C <= 255, 3] padded, with ``UNKNOWN_COLOUR`` at 255."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(colours)] = colours
    table[UNKNOWN] = UNKNOWN_COLOUR
    return table


def legend(image: np.ndarray, names: list[str], colours: np.ndarray, row: int = 18) -> np.ndarray:
    """Append a strip below ``image`` with a colour swatch and name per entry.

    Args:
        image (np.ndarray): HxWx3 uint8.
        names: class names to list, in order.
        colours (np.ndarray): uint8 [len(names), 3], one per name.
        row: pixels per legend line.
    Returns:
        np.ndarray: (H + strip)xWx3 uint8.
    """
    from PIL import Image, ImageDraw

    w = image.shape[1]
    slot = max(120, min(w, 200))
    per_line = max(1, w // slot)
    lines = -(-len(names) // per_line)
    canvas = Image.new("RGB", (w, image.shape[0] + lines * row + 4), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (name, colour) in enumerate(zip(names, colours)):
        x, y = (i % per_line) * slot + 4, image.shape[0] + (i // per_line) * row + 4
        draw.rectangle([x, y, x + row - 6, y + row - 6], fill=tuple(int(c) for c in colour))
        draw.text((x + row, y), name, fill=(0, 0, 0))
    return np.asarray(canvas)


def load_palette(path: str | Path) -> np.ndarray:
    """Class colours from an image file: uint8 [N, 3].

    A palette-mode PNG gives its palette; any other image gives its pixels in row-major order
    (a 1xN or Nx1 colour strip such as CamVid's ``palette11.png``; alpha dropped).
    Raises:
        ConfigError: the file is missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode == "P":
                flat = np.asarray(im.getpalette() or [], dtype=np.uint8)
                return flat[: len(flat) // 3 * 3].reshape(-1, 3)
            return np.asarray(im.convert("RGB"), dtype=np.uint8).reshape(-1, 3)
    except (OSError, UnidentifiedImageError) as e:
        raise ConfigError(f"cannot read palette {str(path)!r}: {e}") from None


def class_colours(
    num_classes: int, palette_file: str | Path | None = None, extend: bool = False
) -> np.ndarray:
    """uint8 [num_classes, 3]: the first colours of ``palette_file`` (e.g. the dataset's own),
    else the deterministic ``palette``. A file with too few colours is a ConfigError, or with
    ``extend`` (a live vocabulary that outgrew it) is completed from ``palette``."""
    if palette_file is None:
        return palette(num_classes)
    colours = load_palette(palette_file)
    if len(colours) < num_classes and extend:
        return np.concatenate([colours, palette(num_classes)[len(colours) :]])
    if len(colours) < num_classes:
        raise ConfigError(
            f"palette {str(palette_file)!r} has {len(colours)} colours for {num_classes} classes"
        )
    return np.ascontiguousarray(colours[:num_classes])


def label_png(labels: np.ndarray, colours: np.ndarray):
    """A palette-mode (P) PIL image of ``labels``: the pixel values are the class indices
    exactly (0..C-1, C <= 256) and the palette makes it viewable.

    Args:
        labels (np.ndarray): HxW int in [0, C), or ``UNKNOWN`` (255, drawn grey).
        colours (np.ndarray): uint8 [C, 3].
    Raises:
        ConfigError: more than 256 classes (an 8-bit PNG cannot hold them).
    """
    from PIL import Image

    if len(colours) > 256:
        raise ConfigError(f"a label PNG holds at most 256 classes, got {len(colours)}")
    h, w = labels.shape
    im = Image.frombytes("P", (w, h), np.ascontiguousarray(labels, dtype=np.uint8).tobytes())
    table = with_unknown(colours) if len(colours) <= UNKNOWN else colours
    im.putpalette(table.reshape(-1).tolist())
    return im
