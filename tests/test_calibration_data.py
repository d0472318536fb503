"""Calibration images: folder and video reading, the runtime's preprocessing, the cache, errors."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from calibration.data import CalibBatch, calibration_batch, feeds, iter_frames
from runtime import io_names
from runtime.errors import CalibrationError
from runtime.manifest import PreprocessCfg
from runtime.preprocess import normalize, resize_rgb

PRE = PreprocessCfg(
    input_size=(32, 32), mean=(122.8, 116.7, 104.1), std=(68.5, 66.6, 70.3), feature_stride=16
)
# name -> HxW; one image already at the input size (no resize), one grayscale, one upper-case suffix
SIZES = {
    "a.png": (40, 30),
    "b.png": (32, 32),
    "c.PNG": (21, 50),
    "d.bmp": (64, 48),
    "e.png": (33, 33),
}


def _images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for name, (h, w) in SIZES.items()}
    out["e.png"] = out["e.png"][:, :, 0].copy()  # grayscale
    return out


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name, img in _images().items():
        Image.fromarray(img).save(d / name)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (d / "notes.txt").write_text("not an image")
    return d


def _expected(img: np.ndarray) -> np.ndarray:
    rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
    return normalize(resize_rgb(rgb, PRE.input_size), PRE)[0]


def test_iter_frames_skips_corrupt_and_other_files(folder, caplog):
    skipped = []
    with caplog.at_level(logging.WARNING, logger="calibration.data"):
        frames = list(iter_frames(folder, skipped=skipped))
    assert [f.name for f in frames] == sorted(SIZES)
    assert skipped == ["broken.png"]
    assert any("broken.png" in r.getMessage() for r in caplog.records)
    for f in frames:
        assert f.rgb.dtype == np.uint8 and f.rgb.shape == SIZES[f.name] + (3,)
    assert [f.name for f in iter_frames(folder, limit=2)] == sorted(SIZES)[:2]


def test_batch_is_the_runtime_preprocessing(folder):
    batch = calibration_batch(folder, PRE, 5)
    assert isinstance(batch, CalibBatch) and not batch.cache_hit
    assert batch.tensors.dtype == np.float32 and batch.tensors.shape == (5, 3, 32, 32)
    assert batch.names == tuple(sorted(SIZES)) and batch.skipped == ("broken.png",)
    images = _images()
    for name, tensor in zip(batch.names, batch.tensors):
        np.testing.assert_array_equal(tensor, _expected(images[name]))
    fed = list(feeds(batch))
    assert len(fed) == 5 and fed[1][io_names.IMAGE].shape == (1, 3, 32, 32)


def test_skip_draws_disjoint_frames(folder):
    full = calibration_batch(folder, PRE, 5)
    first = calibration_batch(folder, PRE, 2)
    held = calibration_batch(folder, PRE, 3, skip=2)
    assert not set(first.names) & set(held.names)
    assert first.names + held.names == full.names
    np.testing.assert_array_equal(held.tensors, full.tensors[2:])


def test_cache_hit_miss_and_corrupt_file(folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    miss = calibration_batch(folder, PRE, 4, cache_dir=cache)
    hit = calibration_batch(folder, PRE, 4, cache_dir=cache)
    assert not miss.cache_hit and hit.cache_hit
    np.testing.assert_array_equal(hit.tensors, miss.tensors)
    assert hit.names == miss.names and hit.skipped == miss.skipped
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and len(files[0].stem) == 64

    st = (folder / "a.png").stat()
    os.utime(folder / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not calibration_batch(folder, PRE, 4, cache_dir=cache).cache_hit
    assert calibration_batch(folder, PRE, 4, cache_dir=cache).cache_hit
    Image.fromarray(_images()["a.png"]).save(folder / "f.png")
    assert not calibration_batch(folder, PRE, 4, cache_dir=cache).cache_hit
    other = PreprocessCfg(PRE.input_size, (0.0, 0.0, 0.0), PRE.std, PRE.feature_stride)
    assert not calibration_batch(folder, other, 4, cache_dir=cache).cache_hit
    assert not calibration_batch(folder, PRE, 4, skip=1, cache_dir=cache).cache_hit

    for f in cache.glob("*.npz"):
        f.write_bytes(b"PK\x03\x04 truncated")
    with caplog.at_level(logging.WARNING, logger="calibration.data"):
        again = calibration_batch(folder, PRE, 4, cache_dir=cache)
    assert not again.cache_hit and any("corrupt" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(again.tensors, miss.tensors)
    assert calibration_batch(folder, PRE, 4, cache_dir=cache).cache_hit


def test_errors(folder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="no readable images"):
        calibration_batch(empty, PRE, 1)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    (bad / "y.png").write_bytes(b"")
    with pytest.raises(CalibrationError, match=r"no readable images.*2 unreadable"):
        calibration_batch(bad, PRE, 1)
    with pytest.raises(CalibrationError, match=r"only 5 readable.*--num must be <= 5, got 6"):
        calibration_batch(folder, PRE, 6)
    with pytest.raises(CalibrationError, match=r"1 after skipping the first 4.*<= 1, got 2"):
        calibration_batch(folder, PRE, 2, skip=4)
    with pytest.raises(CalibrationError, match="does not exist"):
        calibration_batch(tmp_path / "missing", PRE, 1)
    with pytest.raises(CalibrationError, match=">= 1"):
        calibration_batch(folder, PRE, 0)
    with pytest.raises(CalibrationError, match="one image"):
        list(iter_frames(folder / "a.png"))
    with pytest.raises(CalibrationError, match="cannot read it as a video"):
        list(iter_frames(folder / "notes.txt"))


def test_video_frames(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    assert writer.isOpened()
    for i in range(6):
        bgr = np.zeros((48, 64, 3), np.uint8)
        bgr[:, :, 2] = 200  # red in BGR order
        bgr[:, :, 1] = 40 * i
        writer.write(bgr)
    writer.release()
    frames = list(iter_frames(path))
    assert [f.name for f in frames] == [f"clip.avi#{i:06d}" for i in range(6)]
    for i, f in enumerate(frames):
        assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.uint8
        # red written in BGR order reads back in channel 0: RGB order
        assert abs(float(f.rgb[..., 0].mean()) - 200) < 8 and float(f.rgb[..., 2].mean()) < 8
        assert abs(float(f.rgb[..., 1].mean()) - 40 * i) < 8
    batch = calibration_batch(path, PRE, 4, skip=2, cache_dir=tmp_path / "cache")
    assert batch.names == tuple(f"clip.avi#{i:06d}" for i in range(2, 6))
    want = normalize(resize_rgb(frames[2].rgb, (32, 32)), PRE)[0]
    np.testing.assert_array_equal(batch.tensors[0], want)
    assert calibration_batch(path, PRE, 4, skip=2, cache_dir=tmp_path / "cache").cache_hit
    with pytest.raises(CalibrationError, match=r"only 6 readable"):
        calibration_batch(path, PRE, 7)
