"""Open-set output end to end: Segmenter threshold, confidence map, infer and camera CLIs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from runtime import camera
from runtime import infer as infer_cli
from runtime.errors import ConfigError
from runtime.label_map import UNKNOWN
from runtime.postprocess import UNKNOWN_COLOUR, overlay, palette
from runtime.segmenter import Segmenter
from runtime.video_out import Painter


def _image(h=96, w=128, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def seg(tiny_vit_folder):
    with Segmenter(tiny_vit_folder, threads=1) as s:
        yield s


def test_threshold_gives_unknown_below_the_score(seg):
    image = _image()
    seg.score_threshold = 0.0
    plain = seg(image, scores=True)
    assert plain.scores.shape == image.shape[:2] and plain.scores.dtype == np.float32
    assert 0 < plain.scores.min() <= plain.scores.max() <= 1 and plain.unknown == 0
    t = float(np.median(plain.scores))
    seg.score_threshold = t
    try:
        got = seg(image)
    finally:
        seg.score_threshold = 0.0
    clear = np.abs(plain.scores - t) > 1e-6
    np.testing.assert_array_equal((got.labels == UNKNOWN)[clear], (plain.scores < t)[clear])
    kept = got.labels != UNKNOWN
    np.testing.assert_array_equal(got.labels[kept], plain.labels[kept])
    assert got.unknown == pytest.approx((~kept).mean()) and 0.3 < got.unknown < 0.7
    assert set(got.classes_present) <= set(plain.classes_present)


def test_threshold_setter_validates(seg):
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="score threshold"):
            seg.score_threshold = bad
    assert seg.score_threshold == 0.0


def test_overlay_leaves_unknown_pixels_unblended():
    image = _image(10, 12)
    labels = np.zeros((10, 12), np.int32)
    labels[:, 6:] = UNKNOWN
    colours = palette(3)
    out = overlay(image, labels, colours, 0.6)
    np.testing.assert_array_equal(out[:, 6:], image[:, 6:])
    assert not np.array_equal(out[:, :6], image[:, :6])
    painter = Painter(0.6, with_legend=True, unknown_legend=True)
    framed = painter(image, labels, ("a", "b", "c"))
    np.testing.assert_array_equal(framed[:10, 6:], image[:, 6:])
    assert framed.shape[0] > 10  # legend strip below, with an "unknown" entry
    assert (framed[10:] == UNKNOWN_COLOUR).all(axis=-1).any()


def test_infer_writes_scores_and_unknown_labels(tiny_vit_folder, tmp_path, capsys):
    Image.fromarray(_image()).save(tmp_path / "in.png")
    base = ["--model", str(tiny_vit_folder), "--image", str(tmp_path / "in.png"), "--threads", "1"]
    assert infer_cli.main([*base, "--out", str(tmp_path / "o.png"), "--scores-out",
                           str(tmp_path / "s.npy")]) == 0  # fmt: skip
    scores = np.load(tmp_path / "s.npy")
    t = float(np.median(scores))
    capsys.readouterr()
    args = [*base, "--out", str(tmp_path / "o2.png"), "--score-threshold", f"{t:.6f}"]
    args += ["--labels-out", str(tmp_path / "l.png"), "--scores-out", str(tmp_path / "s.png")]
    assert infer_cli.main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["score_threshold"] == pytest.approx(t) and 0.3 < line["unknown_fraction"] < 0.7
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode == "P"
        idx = np.asarray(im)
        assert tuple(im.getpalette()[3 * UNKNOWN : 3 * UNKNOWN + 3]) == tuple(UNKNOWN_COLOUR)
    clear = np.abs(scores - t) > 1e-5
    np.testing.assert_array_equal((idx == UNKNOWN)[clear], (scores < t)[clear])
    with Image.open(tmp_path / "s.png") as im:
        grey = np.asarray(im)
    assert grey.dtype == np.uint8 and np.abs(grey - np.rint(scores * 255)).max() <= 1


def test_bad_threshold_flag_exits_2(tiny_vit_folder, tmp_path, capsys):
    args = ["--model", str(tiny_vit_folder), "--image", "sample:astronaut", "--out",
            str(tmp_path / "o.png"), "--score-threshold", "1.5"]  # fmt: skip
    with pytest.raises(SystemExit) as e:
        infer_cli.main(args)
    assert e.value.code == 2 and "[0, 1)" in capsys.readouterr().err


def test_camera_loop_draws_unknown_through(tiny_vit_folder, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    images = [_image(64, 80, seed=i) for i in range(3)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(frames / f"{i}.png")
    with Segmenter(tiny_vit_folder, threads=1) as seg:
        t = float(np.median(seg(images[0], scores=True).scores))
        seg.score_threshold = t
        unknown = [seg(image).labels == UNKNOWN for image in images]
    assert 0 < unknown[0].mean() < 1
    out = tmp_path / "out"
    args = ["--model", str(tiny_vit_folder), "--source", str(frames), "--out", str(out)]
    args += ["--alpha", "1", "--no-legend", "--threads", "1", "--score-threshold", repr(t)]
    assert camera.main(args) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["frames_processed"] == 3
    written = sorted(out.glob("*.png"))
    assert len(written) == 3
    for image, mask, f in zip(images, unknown, written):  # alpha 1: only unknown shows through
        got = np.asarray(Image.open(f))
        np.testing.assert_array_equal(got[mask], image[mask])
        assert (got[~mask] != image[~mask]).any(axis=-1).mean() > 0.9
