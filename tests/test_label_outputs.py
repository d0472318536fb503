"""Outputs people look at: label PNGs in palette mode (exact indices, viewable colours) and the
dataset's own palette for overlays, label PNGs and the camera loop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from runtime import infer as infer_cli
from runtime.errors import ConfigError
from runtime.postprocess import class_colours, label_png, load_palette, palette


def test_label_png_holds_the_indices_and_the_colours(tmp_path):
    labels = np.arange(12, dtype=np.int32).reshape(3, 4) % 5
    colours = palette(5)
    label_png(labels, colours).save(tmp_path / "l.png")
    with Image.open(tmp_path / "l.png") as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.asarray(im), labels)
        got = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(got, colours[labels])
    with pytest.raises(ConfigError, match="at most 256"):
        label_png(labels, palette(257))


def test_palettes_from_strips_and_palette_pngs(tmp_path):
    strip = np.array([[[10, 20, 30, 255], [40, 50, 60, 255], [70, 80, 90, 255]]], np.uint8)
    Image.fromarray(strip, "RGBA").save(tmp_path / "strip.png")
    np.testing.assert_array_equal(load_palette(tmp_path / "strip.png"), strip[0, :, :3])
    p = Image.new("P", (2, 2))
    p.putpalette([1, 2, 3, 4, 5, 6] + [0] * (254 * 3))
    p.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_palette(tmp_path / "p.png")[:2], [[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ConfigError, match="has 3 colours for 4 classes"):
        class_colours(4, tmp_path / "strip.png")
    ext = class_colours(5, tmp_path / "strip.png", extend=True)
    np.testing.assert_array_equal(ext[:3], strip[0, :, :3])
    np.testing.assert_array_equal(ext[3:], palette(5)[3:])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="cannot read palette"):
        load_palette(tmp_path / "bad.png")


def test_infer_writes_a_palette_label_png_with_the_given_colours(tiny_vit_folder, tmp_path):
    rgb = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    strip = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]], np.uint8)
    Image.fromarray(strip).save(tmp_path / "pal.png")
    out, labels = tmp_path / "o.png", tmp_path / "l.png"
    args = [
        "--model",
        str(tiny_vit_folder),
        "--image",
        str(tmp_path / "in.png"),
        "--out",
        str(out),
        "--labels-out",
        str(labels),
        "--palette",
        str(tmp_path / "pal.png"),
    ]
    assert infer_cli.main(args) == 0
    with Image.open(labels) as im:
        assert im.mode == "P"
        idx = np.asarray(im)
        rgb_labels = np.asarray(im.convert("RGB"))
    assert idx.shape == (60, 80) and idx.max() < 4
    np.testing.assert_array_equal(rgb_labels, strip[0][idx])


def test_infer_refuses_a_bad_palette_before_loading(tiny_vit_folder, tmp_path, capsys):
    (tmp_path / "few.png").write_bytes(b"garbage")
    args = [
        "--model",
        "/nonexistent",
        "--image",
        "sample:astronaut",
        "--out",
        str(tmp_path / "o.png"),
        "--palette",
        str(tmp_path / "few.png"),
    ]
    assert infer_cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot read palette") and len(err) == 1


def test_camvid_palette_colours_camvid_classes(tiny_vit_folder, camvid, tmp_path):
    colours = class_colours(11, camvid / "palette11.png")
    assert colours.shape == (11, 3) and tuple(colours[0]) == (128, 128, 128)  # sky
    assert tuple(colours[3]) == (128, 64, 128)  # road


def test_camera_painter_takes_the_palette_and_extends_it_for_a_larger_vocabulary(tmp_path):
    from runtime.camera import parse_args
    from runtime.video_out import Painter

    strip = np.array([[[9, 8, 7], [6, 5, 4]]], np.uint8)
    Image.fromarray(strip).save(tmp_path / "pal.png")
    painter = Painter(0.5, True, str(tmp_path / "pal.png"))
    np.testing.assert_array_equal(painter.colours(("a", "b")), strip[0])
    three = painter.colours(("a", "b", "c"))  # a live vocabulary outgrew the palette
    np.testing.assert_array_equal(three[:2], strip[0])
    np.testing.assert_array_equal(three[2], palette(3)[2])
    args = parse_args(["--model", "m", "--source", "0", "--palette", str(tmp_path / "pal.png")])
    assert args.palette == str(tmp_path / "pal.png")


def test_video_sink_says_which_codec_it_used(tmp_path):
    pytest.importorskip("cv2")
    from runtime.video_out import VideoSink

    for name, allowed in (("v.mp4", {"avc1", "mp4v"}), ("v.avi", {"MJPG"})):
        sink = VideoSink(tmp_path / name, 10)
        for _ in range(3):
            sink.write(np.zeros((48, 64, 3), np.uint8), None)
        sink.close()
        assert sink.codec in allowed and (tmp_path / name).stat().st_size > 0


def test_stats_overlay_draws_fps_and_latency_top_left():
    pytest.importorskip("cv2")
    from runtime.camera import draw_stats

    img = np.full((60, 200, 3), 127, np.uint8)
    out = draw_stats(img, 24.5, 41.0)
    assert out.shape == img.shape and np.array_equal(img, np.full_like(img, 127))  # a copy
    corner = out[:20, :100]
    assert (corner == 0).any() and (corner > 200).any()  # dark box, white text
    assert np.array_equal(out[40:], img[40:])  # nothing drawn below the box
    assert not np.array_equal(draw_stats(img, 24.5, 41.0), draw_stats(img, 99.0, 3.0))


def test_camera_cli_reports_the_codec_and_draws_stats(tiny_vit_folder, tmp_path):
    pytest.importorskip("cv2")
    import json
    import subprocess
    import sys
    from pathlib import Path

    from benchmarks.camera import synthetic_video

    src = synthetic_video(tmp_path / "in.mp4", 4, 96, 64, fps=25)
    out = tmp_path / "out.mp4"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "runtime.camera",
            "--model",
            str(tiny_vit_folder),
            "--source",
            str(src),
            "--out",
            str(out),
            "--overlay-stats",
            "--no-legend",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["video_codec"] in ("avc1", "mp4v") and report["frames_processed"] == 4
    assert out.stat().st_size > 0
