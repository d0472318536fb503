"""One resize everywhere: ``runtime.preprocess.resize_rgb`` (cv2 path and numpy path), the training
rescale and the evaluation resize give the bytes of ``cv2.resize(..., cv2.INTER_LINEAR)``."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from conftest import CAMVID

import runtime.preprocess as pp
from runtime.preprocess import resize_linear_numpy, resize_rgb, short_side_size

cv2 = pytest.importorskip("cv2")
# Imported before any test hides cv2: the training pipeline itself needs it.
transforms = pytest.importorskip("training.data.transforms")

# (H, W, H', W'): exact ratios (2x down is OpenCV's INTER_AREA fast path, 2x up its own 2x path),
# non-integer ratios, single pixels and lines, extreme aspect changes, deployment sizes.
SIZES = (
    (100, 100, 50, 50),
    (64, 48, 128, 96),
    (101, 99, 202, 198),
    (128, 96, 32, 24),
    (32, 24, 128, 96),
    (90, 60, 30, 20),
    (30, 20, 90, 60),
    (37, 53, 224, 224),
    (300, 410, 224, 224),
    (1, 1, 5, 7),
    (1, 9, 1, 3),
    (9, 1, 3, 1),
    (5, 300, 1, 1),
    (2, 2, 1, 1),
    (7, 3000, 5000, 2),
    (720, 1280, 224, 224),
    (1440, 1920, 448, 597),
    (360, 480, 448, 597),
)


def _cv2_resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    out = cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(size_hw + image.shape[2:])


def _image(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    shape = (h, w) if channels == 0 else (h, w, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture(params=["cv2", "numpy"])
def path(request, monkeypatch):
    """resize_rgb with cv2 (the fast path) and without it (cv2 made unimportable)."""
    if request.param == "numpy":
        monkeypatch.setattr(pp, "CV2_AVAILABLE", False)
        monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` would raise
    return request.param


@pytest.mark.parametrize("channels", [3, 1, 4, 0])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "{}x{}-{}x{}".format(*s))
def test_resize_rgb_is_cv2_inter_linear(path, size, channels):
    if channels != 3 and size[0] * size[1] > 1e6:
        pytest.skip("the large sizes run in RGB only")
    image = _image(np.random.default_rng(size[0] * 7 + size[3]), size[0], size[1], channels)
    got = resize_rgb(image, size[2:])
    assert got.dtype == np.uint8 and got.shape == size[2:] + image.shape[2:]
    np.testing.assert_array_equal(got, _cv2_resize(image, size[2:]))


def test_numpy_resize_matches_cv2_on_random_sizes():
    rng = np.random.default_rng(0)
    for _ in range(400):
        h, w, oh, ow = (int(v) for v in rng.integers(1, 120, 4))
        image = _image(rng, h, w, int(rng.choice([1, 3, 4])))
        got = resize_linear_numpy(image, (oh, ow))
        np.testing.assert_array_equal(got, _cv2_resize(image, (oh, ow)), f"{image.shape}->{oh, ow}")


def test_numpy_resize_matches_cv2_on_every_1d_size_pair():
    """Every (n -> m) for n, m in 1..48 along each axis: all the border and ratio cases."""
    rng = np.random.default_rng(1)
    for n in range(1, 49):
        across, down = _image(rng, 2, n), _image(rng, n, 2)
        for m in range(1, 49):
            for image, size in ((across, (3, m)), (down, (m, 3))):
                want = _cv2_resize(image, size)
                np.testing.assert_array_equal(resize_linear_numpy(image, size), want, f"{n}->{m}")


def test_views_same_size_and_bad_input(path):
    image = _image(np.random.default_rng(2), 40, 50)
    flipped = image[::-1, ::2]  # non-contiguous view
    want = _cv2_resize(flipped.copy(), (17, 9))
    np.testing.assert_array_equal(resize_rgb(flipped, (17, 9)), want)
    assert resize_rgb(image, (40, 50)) is image
    with pytest.raises(AssertionError, match="uint8"):
        resize_rgb(image.astype(np.float32), (4, 4))
    with pytest.raises(AssertionError, match="positive"):
        resize_rgb(image, (0, 4))


def test_training_and_evaluation_resize_are_resize_rgb():
    """The training rescale (mmseg Resize, keep ratio) and the test pipeline's short-side resize."""
    from training.data.config import DataCfg

    rng = np.random.default_rng(3)
    cfg = DataCfg(dataset="folder", images="unused", masks="unused")  # pipeline fields only
    for h, w in ((375, 500), (1440, 1920), (512, 512), (101, 37)):
        image = _image(rng, h, w)
        for scale in ((2048, 512), (1024, 256), (4096, 1024), (1337, 333)):
            size = tuple(transforms.rescale_size(h, w, scale))
            np.testing.assert_array_equal(transforms.rescale(image, scale), resize_rgb(image, size))
        size = tuple(transforms.eval_size(h, w, min(cfg.img_scale)))
        want = transforms.normalize(resize_rgb(image, size), cfg.mean, cfg.std)
        np.testing.assert_array_equal(transforms.eval_image(image, cfg), want)


def test_short_side_size_rounds_as_the_evaluation():
    assert short_side_size((1440, 1920), 448) == (448, 597)
    assert short_side_size((4, 5), 2) == (2, 3)  # a tie: 2.5 rounds up, as int(x + 0.5)
    rng = np.random.default_rng(4)
    for h, w, short in rng.integers(1, 3000, size=(2000, 3)):
        want = tuple(transforms.eval_size(int(h), int(w), int(short)))
        assert short_side_size((int(h), int(w)), int(short)) == want


def _camvid_frames(n: int = 3) -> list[np.ndarray]:
    from PIL import Image

    if not (CAMVID / "test").is_dir():
        pytest.skip("../shared/data/camvid is absent")
    files = sorted((CAMVID / "test").glob("*.png"))[:n]
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def test_camvid_frames_resize_identically(path):
    """Real frames (360x480), and a 1440x1920 frame made by repeating each pixel 4x4, through the
    runtime resize, the training rescale and the evaluation resize (short side 448 and 512)."""
    for frame in _camvid_frames():
        big = np.ascontiguousarray(frame.repeat(4, axis=0).repeat(4, axis=1))
        assert big.shape == (1440, 1920, 3)
        for image in (frame, big):
            for short in (224, 448, 512):
                size = short_side_size(image.shape[:2], short)
                assert size == tuple(transforms.eval_size(*image.shape[:2], short))
                got = resize_rgb(image, size)
                np.testing.assert_array_equal(got, _cv2_resize(image, size))
                np.testing.assert_array_equal(got, transforms.rescale(image, (4 * short, short)))
            square = resize_rgb(image, (224, 224))  # the fixed model input: aspect not kept
            np.testing.assert_array_equal(square, _cv2_resize(image, (224, 224)))
