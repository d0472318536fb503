"""Read back a label PNG written by ovss_infer with Pillow (ctest's cli.labels_png_* checks).

    python cpp/tests/check_label_png.py LABELS.png EXPECTED.npy [--unknown]

The file must be palette mode ("P") with pixel values equal to the expected int32 class indices
(a .npy: the Python runtime's labels, or ovss_infer's own --labels-out .npy), and palette entry
255 the unknown grey; with --unknown, some pixels must be 255. Exit status 1 with the reason.
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

UNKNOWN_GREY = [128, 128, 128]


def check(png: str, expected: str, unknown: bool) -> str | None:
    """The first problem found, or None."""
    with Image.open(png) as im:
        mode, got, palette = im.mode, np.asarray(im), im.getpalette()
    want = np.load(expected)
    if mode != "P":
        return f"mode {mode!r}, expected 'P'"
    if got.shape != want.shape or not np.array_equal(got.astype(np.int32), want):
        return f"indices differ from {expected} at {int((got != want).sum())} pixels"
    if palette[255 * 3 : 256 * 3] != UNKNOWN_GREY:
        return f"palette[255] is {palette[255 * 3 : 256 * 3]}, expected {UNKNOWN_GREY}"
    if unknown and not (got == 255).any():
        return "no unknown (255) pixels"
    return None


def main(argv: list[str]) -> int:
    problem = check(argv[0], argv[1], "--unknown" in argv[2:])
    if problem:
        print(f"error: {argv[0]}: {problem}")
        return 1
    print(f"ok: {argv[0]} is a palette PNG with the expected indices")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
