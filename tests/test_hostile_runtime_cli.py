"""Hostile arguments, images and class lists to the runtime programs (``runtime.infer``,
``runtime.camera``, ``runtime.serve``): every refusal is one stderr line and exit 2, decided
before the model is loaded where the argument alone decides it.

The model load (``Segmenter``) is replaced by a function that raises ``Reached`` for the cases
that must be refused first; a control case must reach it. Images are made on the fly, among them
a PNG "bomb" whose header claims 40000 x 40000 pixels in a few hundred bytes.
"""

from __future__ import annotations

import importlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_exit_2
from PIL import Image

from runtime.errors import InvalidImageError
from runtime.image import load_image


class Reached(BaseException):
    """The model load was called (not an ``Exception``: no error policy catches it)."""


def _reached(*_a, **_k):
    raise Reached


def _run(module: str, argv: list[str], monkeypatch=None) -> int:
    """``module.main(argv)``; with ``monkeypatch``, the model load raises ``Reached``."""
    mod = importlib.import_module(module)
    if monkeypatch is not None:
        monkeypatch.setattr(mod, "Segmenter", _reached)
    try:
        return mod.main(argv)
    except SystemExit as e:
        return e.code


def png_bomb(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A valid PNG signature and IHDR claiming ``width`` x ``height`` RGB pixels, then one short
    deflate stream of zero rows (decoding it in full would take width*height*3 bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width * 3 + 1) * 4, 9)  # 4 rows; the rest is "truncated"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(path)
    return path


def _infer(folder, image, tmp_path, *extra) -> list[str]:
    return [
        "--model",
        str(folder),
        "--image",
        str(image),
        "--out",
        str(tmp_path / "overlay.png"),
        "--backend",
        "onnxruntime",
        "--threads",
        "1",
        *extra,
    ]


# --------------------------------------------------------------------------- flag values

BAD_INFER_FLAGS = [
    (["--stride", "0"], "--stride"),
    (["--stride", "-3"], "--stride"),
    (["--stride", "1.5"], "--stride"),
    (["--threads", "0"], "--threads"),
    (["--threads", "100000"], "--threads"),
    (["--short-side", "-1"], "--short-side"),
    (["--short-side", "99999999"], "--short-side"),
    (["--alpha", "2"], "--alpha"),
    (["--alpha", "nan"], "--alpha"),
    (["--score-threshold", "1"], "--score-threshold"),
    (["--score-threshold", "-0.1"], "--score-threshold"),
    (["--max-pixels", "-1"], "--max-pixels"),
    (["--max-pixels", "1e9"], "--max-pixels"),
    (["--precision", "int4"], "--precision"),
    (["--classes", ""], "--classes"),
    (["--classes", "cat,dog,cat"], "cat"),
]


@pytest.mark.parametrize("extra, match", BAD_INFER_FLAGS, ids=lambda v: str(v))
def test_infer_refuses_bad_flags_before_the_model(
    extra, match, tiny_vit_folder, image, tmp_path, monkeypatch, capsys
):
    rc = _run("runtime.infer", _infer(tiny_vit_folder, image, tmp_path, *extra), monkeypatch)
    assert_one_line_exit_2(rc, capsys.readouterr().err, match)
    assert not (tmp_path / "overlay.png").exists()


def test_control_case_reaches_the_model(tiny_vit_folder, image, tmp_path, monkeypatch):
    with pytest.raises(Reached):
        _run("runtime.infer", _infer(tiny_vit_folder, image, tmp_path), monkeypatch)


def test_stride_larger_than_the_window_is_refused(tiny_vit_folder, image, tmp_path, capsys):
    rc = _run("runtime.infer", _infer(tiny_vit_folder, image, tmp_path, "--stride", "225"))
    assert_one_line_exit_2(rc, capsys.readouterr().err, "larger than the model's window")
    # the window itself is fine: one stride per window, no gaps
    assert _run("runtime.infer", _infer(tiny_vit_folder, image, tmp_path, "--stride", "224")) == 0


# --------------------------------------------------------------------------- output paths


def _outputs(tmp_path: Path, image: Path) -> dict[str, tuple[list[str], str]]:
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_dir").mkdir()
    return {
        "out_is_a_folder": (["--out", str(tmp_path / "a_dir")], "existing folder"),
        "out_under_a_file": (["--out", str(tmp_path / "a_file" / "o.png")], "a_file"),
        "out_is_the_image": (["--out", str(image)], "same file as --image"),
        "labels_out_is_a_folder": (["--labels-out", str(tmp_path / "a_dir")], "--labels-out"),
        "scores_equal_out": (["--scores-out", str(tmp_path / "overlay.png")], "same file"),
    }


@pytest.mark.parametrize(
    "case",
    ["out_is_a_folder", "out_under_a_file", "out_is_the_image", "labels_out_is_a_folder",
     "scores_equal_out"],
)  # fmt: skip
def test_infer_checks_outputs_before_the_model(
    case, tiny_vit_folder, image, tmp_path, monkeypatch, capsys
):
    extra, match = _outputs(tmp_path, image)[case]
    rc = _run("runtime.infer", _infer(tiny_vit_folder, image, tmp_path, *extra), monkeypatch)
    assert_one_line_exit_2(rc, capsys.readouterr().err, match)
    assert (tmp_path / "a_file").read_text() == "x"


def test_missing_output_parents_are_created(tiny_vit_folder, image, tmp_path):
    out = tmp_path / "new" / "deeper" / "o.png"
    argv = _infer(tiny_vit_folder, image, tmp_path)
    argv[argv.index("--out") + 1] = str(out)
    assert _run("runtime.infer", argv) == 0 and out.is_file()


def test_unwritable_output_folder(tiny_vit_folder, image, tmp_path, monkeypatch, capsys):
    import os

    if os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop writes")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    argv = _infer(tiny_vit_folder, image, tmp_path, "--out", str(locked / "o.png"))
    assert_one_line_exit_2(_run("runtime.infer", argv, monkeypatch), capsys.readouterr().err, "")


# --------------------------------------------------------------------------- images


def test_png_bomb_is_refused_from_the_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 2000
    with pytest.raises(InvalidImageError, match="over the limit") as info:
        load_image(bomb)
    assert "--max-pixels" in str(info.value)


def test_png_bomb_cli_is_one_line_exit_2(tiny_vit_folder, tmp_path, monkeypatch, capsys):
    bomb = png_bomb(tmp_path / "bomb.png")
    rc = _run("runtime.infer", _infer(tiny_vit_folder, bomb, tmp_path), monkeypatch)
    assert_one_line_exit_2(rc, capsys.readouterr().err, "--max-pixels")


def test_max_pixels_is_configurable(tiny_vit_folder, image, tmp_path, capsys):
    rc = _run("runtime.infer", _infer(tiny_vit_folder, image, tmp_path, "--max-pixels", "3000"))
    assert_one_line_exit_2(rc, capsys.readouterr().err, "3,000")  # 64 x 48 = 3072 pixels
    assert (
        _run("runtime.infer", _infer(tiny_vit_folder, image, tmp_path, "--max-pixels", "3072")) == 0
    )
    assert _run("runtime.infer", _infer(tiny_vit_folder, image, tmp_path, "--max-pixels", "0")) == 0


@pytest.mark.parametrize(
    "name, data",
    [
        ("empty.png", b""),
        ("text.png", b"not an image at all\n"),
        ("truncated.png", None),
        ("random.jpg", bytes(np.random.default_rng(1).integers(0, 256, 4096, np.uint8))),
    ],
)
def test_corrupt_images_are_one_line_exit_2(
    name, data, tiny_vit_folder, image, tmp_path, monkeypatch, capsys
):
    bad = tmp_path / name
    bad.write_bytes(image.read_bytes()[:200] if data is None else data)
    rc = _run("runtime.infer", _infer(tiny_vit_folder, bad, tmp_path), monkeypatch)
    assert_one_line_exit_2(rc, capsys.readouterr().err, name)


# --------------------------------------------------------------------------- class lists


def _classes(folder, image, tmp_path, spec: str, monkeypatch) -> tuple[str, ...]:
    """The vocabulary ``runtime.infer`` parses from ``--classes spec``; its main() must get past
    the parsing to the model load."""
    from runtime.infer import parse_args

    argv = _infer(folder, image, tmp_path, "--classes", spec)
    with pytest.raises(Reached):
        _run("runtime.infer", argv, monkeypatch)
    return parse_args(argv).classes


def test_long_class_list_never_touches_the_file_system(
    tiny_vit_folder, image, tmp_path, monkeypatch
):
    """Well over NAME_MAX (255 bytes) and PATH_MAX (4096): an on-device vocabulary."""
    names = tuple(f"object number {i} with a long descriptive name" for i in range(120))
    spec = ",".join(names)
    assert len(spec.encode()) > 4096
    assert _classes(tiny_vit_folder, image, tmp_path, spec, monkeypatch) == names


def test_class_list_with_slashes_is_not_a_path(tiny_vit_folder, image, tmp_path, monkeypatch):
    spec = "cat/dog,../../etc/passwd,car"
    got = _classes(tiny_vit_folder, image, tmp_path, spec, monkeypatch)
    assert got == ("cat/dog", "../../etc/passwd", "car")


def test_class_file_with_bom_and_crlf(tiny_vit_folder, image, tmp_path, monkeypatch):
    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffroad\r\nsky\r\n\r\ncafé\r\n".encode())
    got = _classes(tiny_vit_folder, image, tmp_path, str(classes), monkeypatch)
    assert got == ("road", "sky", "café")


def test_class_file_with_invalid_utf8(tiny_vit_folder, image, tmp_path, monkeypatch, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_bytes(b"road\n\xff\xfe sky\n")
    argv = _infer(tiny_vit_folder, image, tmp_path, "--classes", str(classes))
    assert_one_line_exit_2(
        _run("runtime.infer", argv, monkeypatch), capsys.readouterr().err, "UTF-8"
    )


# --------------------------------------------------------------------------- camera, serve


def _camera(folder, source, *extra) -> list[str]:
    return ["--model", str(folder), "--source", str(source), "--backend", "onnxruntime", *extra]


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--max-frames", "0"], "--max-frames"),
        (["--queue", "0"], "--queue"),
        (["--threads", "-1"], "--threads"),
        (["--stride", "0"], "--stride"),
        (["--alpha", "-0.5"], "--alpha"),
        (["--fourcc", "MJPEG"], "--fourcc"),
        (["--json", "{dir}"], "--json"),
        (["--out", "{file}/frames"], "--out"),
        (["--out", "{file}.mp4/x.mp4"], "--out"),
        (["--out", "{dir}/o.mp4", "--json", "{dir}/o.mp4"], "same path"),
    ],
    ids=lambda v: str(v),
)
def test_camera_refuses_before_the_model(
    extra, match, tiny_vit_folder, image, tmp_path, monkeypatch, capsys
):
    (tmp_path / "f").write_text("x")
    (tmp_path / "f.mp4").write_text("x")
    (tmp_path / "d").mkdir()
    subs = {"{dir}": str(tmp_path / "d"), "{file}": str(tmp_path / "f")}
    for key, value in subs.items():
        extra = [e.replace(key, value) for e in extra]
    rc = _run("runtime.camera", _camera(tiny_vit_folder, image.parent, *extra), monkeypatch)
    assert_one_line_exit_2(rc, capsys.readouterr().err, match)


def test_camera_control_case_reaches_the_model(tiny_vit_folder, image, tmp_path, monkeypatch):
    argv = _camera(tiny_vit_folder, image.parent, "--out", str(tmp_path / "frames"))
    with pytest.raises(Reached):
        _run("runtime.camera", argv, monkeypatch)


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--port", "70000"], "--port"),
        (["--port", "-1"], "--port"),
        (["--max-pixels", "0"], "--max-pixels"),
        (["--max-bytes", "0"], "--max-bytes"),
        (["--fps", "0"], "--fps"),
        (["--threads", "999"], "--threads"),
    ],
    ids=lambda v: str(v),
)
def test_serve_refuses_before_the_model(extra, match, tiny_vit_folder, monkeypatch, capsys):
    argv = ["--model", str(tiny_vit_folder), *extra]
    assert_one_line_exit_2(_run("runtime.serve", argv, monkeypatch), capsys.readouterr().err, match)


def _video(path: Path, frames: int = 3, size=(64, 48)) -> Path:
    cv2 = pytest.importorskip("cv2")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 40 * i, np.uint8))
    writer.release()
    return path


def test_camera_refuses_video_frames_over_the_pixel_limit(tiny_vit_folder, tmp_path, capsys):
    video = _video(tmp_path / "clip.avi")  # 64 x 48 = 3072 pixels a frame
    argv = _camera(tiny_vit_folder, video, "--max-pixels", "3000", "--threads", "1")
    rc = _run("runtime.camera", argv)
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and "--max-pixels" in errors[0], errors
    assert _run("runtime.camera", [*argv[:-4], "--max-pixels", "3072", "--threads", "1"]) == 0


def test_image_folder_source_skips_images_over_the_limit(tmp_path):
    from runtime.sources import SourceCfg, open_source

    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "a_small.png")
    png_bomb(tmp_path / "b_bomb.png")
    source = open_source(str(tmp_path), SourceCfg(max_pixels=1000))
    first = source.read()
    assert first is not None and first.image.shape == (10, 10, 3)
    assert source.read() is None and source.skipped == 1


def test_a_live_source_with_oversized_frames_stops_instead_of_reconnecting():
    """A camera whose frames are over --max-pixels: the next frame would be as large, so the
    reader raises (one error line in the CLI) rather than reconnecting forever."""
    import threading

    from runtime.errors import FrameTooLargeError
    from runtime.frame_queue import Reader

    class Huge:
        name, live, fps = "camera '0'", True, None
        reopened = 0

        def read(self):
            raise FrameTooLargeError("camera '0' gives 9000x9000 pixel frames, over the limit")

        def reopen(self):
            self.reopened += 1

        def close(self):
            pass

    source = Huge()
    reader = Reader(source, threading.Event(), backoff_initial_s=0.001, backoff_max_s=0.001)
    with pytest.raises(FrameTooLargeError, match="over the limit"):
        reader.next()
    assert source.reopened == 0
