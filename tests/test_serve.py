"""runtime.serve: the JSON API over urllib against a server on port 0 in a thread, the MJPEG
stream from a looping image folder, a clean Ctrl-C, and the page in headless Chromium."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.error import HTTPError

import numpy as np
import pytest
from conftest import export_folder
from PIL import Image

from runtime.segmenter import Segmenter
from runtime.serve import App, ServeCfg, Server, decode_image, warn_if_public

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MAX_BYTES, MAX_PIXELS = 200_000, 100_000
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 60)]


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory, one_thread) -> Path:
    return export_folder(tmp_path_factory, "tiny_vit_serve", vocab_mode="input", text_encoder=True)


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory) -> Path:
    """Four 96x128 PNGs of different colours (with a stripe), for a looping folder source."""
    folder = tmp_path_factory.mktemp("serve_frames")
    for i, colour in enumerate(COLOURS):
        image = np.full((96, 128, 3), colour, dtype=np.uint8)
        image[30:60, 20 + 20 * i : 60 + 20 * i] = 255
        Image.fromarray(image).save(folder / f"f{i}.png")
    return folder


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt)
    return buf.getvalue()


def sample(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@contextlib.contextmanager
def running(folder: Path, source: str | None = None, **cfg):
    """A server on 127.0.0.1, port 0, in a thread: yields (base url, app)."""
    cfg = {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS, "pace_fps": 5.0, **cfg}
    with Segmenter(folder, backend="onnxruntime", threads=1) as seg:
        app = App(seg, ServeCfg(**cfg), source)
        app.start()
        server = Server(app, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.url, app
        finally:
            app.close()
            server.shutdown()
            server.server_close()
            thread.join(5)


def call(url: str, path: str, body=None, content_type: str = "application/json"):
    """(status, decoded JSON) of GET (no body) or POST; dict bodies are sent as JSON."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": content_type}
    request = urllib.request.Request(url + path.lstrip("/"), data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def api(text_folder):
    with running(text_folder) as (url, app):
        yield url, app


def test_segment_returns_the_labels_as_a_palette_png(api):
    url, app = api
    image = sample()
    status, out = call(url, "/segment", encode(image), "image/png")
    assert status == 200, out
    assert out["shape"] == [48, 64] and out["classes"] == list(app.seg.classes)
    labels = Image.open(io.BytesIO(base64.b64decode(out["labels_png"])))
    assert labels.mode == "P" and labels.size == (64, 48)
    with Segmenter(app.seg.folder, backend="onnxruntime", threads=1) as ref:
        if ref.classes != app.seg.classes:
            ref.set_classes(app.seg.classes)
        expected = ref(image)
    np.testing.assert_array_equal(np.asarray(labels), expected.labels)
    assert out["present"] == list(expected.classes_present)
    status, out = call(url, "/segment", encode(image, "JPEG"), "image/jpeg")
    assert status == 200 and out["shape"] == [48, 64]


@pytest.mark.parametrize(
    "body, words",
    [
        (b"", "empty"),
        (b"this is not an image", "cannot decode"),
        (encode(sample(64, 64))[:200], "cannot decode"),  # truncated PNG
        (bytes(MAX_BYTES + 1), "byte limit"),
        (encode(np.zeros((400, 400, 3), np.uint8)), "pixel limit"),  # small file, 160k pixels
    ],
    ids=["empty", "not-an-image", "truncated", "too-many-bytes", "too-many-pixels"],
)
def test_bad_uploads_are_400_and_the_server_goes_on(api, body, words):
    url, _ = api
    status, out = call(url, "/segment", body, "application/octet-stream")
    assert status == 400 and words in out["error"], out
    status, _ = call(url, "/segment", encode(sample()), "image/png")
    assert status == 200


def test_decode_image_refuses_16_bit():
    from runtime.errors import InvalidImageError

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(buf, "PNG")
    with pytest.raises(InvalidImageError, match="non-8-bit"):
        decode_image(buf.getvalue(), 1000)


def test_classes_change_the_legend_stats_and_results(api):
    url, app = api
    before = list(app.seg.classes)
    try:
        status, legend = call(url, "/classes", {"classes": ["road", "sky", "person"]})
        assert status == 200, legend
        assert legend["classes"] == ["road", "sky", "person"]
        assert call(url, "/legend")[1] == legend
        assert all(len(c) == 7 and c.startswith("#") for c in legend["colours"])
        assert call(url, "/stats")[1]["classes"] == ["road", "sky", "person"]
        _, out = call(url, "/segment", encode(sample()), "image/png")
        assert out["classes"] == ["road", "sky", "person"]
        for bad in ({"classes": "road"}, {"classes": []}, {"classes": ["a", "A"]}, {"x": 1}):
            status, out = call(url, "/classes", bad)
            assert status == 400 and out["error"], bad
        status, out = call(url, "/classes", b"{not json")
        assert status == 400 and "not JSON" in out["error"]
        assert list(app.seg.classes) == ["road", "sky", "person"]  # bad requests changed nothing
    finally:
        app.seg.set_classes(before)


def test_classes_of_a_fixed_vocabulary_folder_are_400(tiny_vit_folder):
    with running(tiny_vit_folder) as (url, _):
        status, out = call(url, "/classes", {"classes": ["road", "sky"]})
        assert status == 400 and "fixed vocabulary" in out["error"]
        assert call(url, "/stats")[1]["text_encoder"] is False


def test_threshold(api):
    url, app = api
    try:
        status, out = call(url, "/threshold", {"value": 0.5})
        assert status == 200 and out == {"threshold": 0.5}
        assert app.seg.score_threshold == 0.5 and call(url, "/stats")[1]["threshold"] == 0.5
        assert call(url, "/legend")[1]["unknown"] == "#808080"
        for bad in ({"value": 1.5}, {"value": -0.1}, {"value": "0.3"}, {"value": True}, {}):
            status, out = call(url, "/threshold", bad)
            assert status == 400 and out["error"], bad
        assert app.seg.score_threshold == 0.5
    finally:
        app.seg.score_threshold = 0.0
    assert call(url, "/legend")[1]["unknown"] is None


def test_unknown_paths_are_404_and_wrong_methods_405(api):
    url, _ = api
    assert call(url, "/nope")[0] == 404
    assert call(url, "/segment/extra", b"x")[0] == 404
    assert call(url, "/stats", {"a": 1})[0] == 405
    assert call(url, "/segment")[0] == 405
    with urllib.request.urlopen(url, timeout=30) as r:
        page = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/html") and 'id="stream"' in page
    assert "http://" not in page and "https://" not in page  # no external assets


def read_parts(url: str, n: int) -> tuple[str, list[bytes]]:
    """The Content-Type and the first ``n`` JPEG parts of the MJPEG stream."""
    parts = []
    with urllib.request.urlopen(url + "stream", timeout=30) as r:
        content_type = r.headers["Content-Type"]
        while len(parts) < n:
            line = r.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                r.readline()  # the blank line after the part headers
                parts.append(r.read(length))
    return content_type, parts


def test_stream_of_a_looping_folder(text_folder, frames_dir):
    with running(text_folder, str(frames_dir), pace_fps=20.0) as (url, app):
        content_type, parts = read_parts(url, 6)  # more than the folder holds: it loops
        assert content_type == "multipart/x-mixed-replace; boundary=ovssframe"
        images = [np.asarray(Image.open(io.BytesIO(p))) for p in parts]
        assert all(i.shape[1] == 128 and i.shape[0] > 96 for i in images)  # + the legend strip
        assert len({i[:96].tobytes() for i in images}) > 1  # the frames change
        stats = call(url, "/stats")[1]
        assert stats["frames"] >= 6 and stats["fps"] > 0 and stats["source"] == str(frames_dir)


def test_without_a_source_the_stream_shows_uploads(api):
    url, _ = api
    call(url, "/segment", encode(sample(40, 50)), "image/png")
    _, parts = read_parts(url, 1)
    assert np.asarray(Image.open(io.BytesIO(parts[0]))).shape[1] == 50


def test_public_host_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="runtime.serve"):
        assert not warn_if_public("127.0.0.1")
        assert not caplog.records
        assert warn_if_public("0.0.0.0")
    assert "no authentication" in caplog.text


def test_ctrl_c_stops_cleanly(text_folder, frames_dir):
    cmd = [sys.executable, "-m", "runtime.serve", "--model", str(text_folder), "--port", "0"]
    cmd += ["--source", str(frames_dir), "--threads", "1", "--backend", "onnxruntime"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if " on http://" in line:
                url = line.split(" on ", 2)[-1].split()[0]
                break
        assert call(url, "/stats")[0] == 200
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopped" in stderr


# --- the page in a real browser ----------------------------------------------------------------


def chrome():
    """Headless Chromium through Debian's chromedriver, or one skip line naming what is missing."""
    try:
        from selenium import webdriver
    except ImportError:
        pytest.skip("browser test: selenium missing (pip install -e '.[dev]')")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("browser test: no Chromium (apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=900,900")
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))


def wait_for(check, timeout: float = 20.0, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_page_in_headless_chromium(text_folder, frames_dir):
    driver = chrome()
    try:
        with running(text_folder, str(frames_dir)) as (url, app):
            from selenium.webdriver.common.by import By

            def legend_names():
                items = driver.find_elements(By.CSS_SELECTOR, "#legend li")
                return [li.get_attribute("data-name") for li in items]

            driver.get(url)
            assert wait_for(legend_names, what="the legend") == list(app.seg.classes)
            stream = driver.find_element(By.ID, "stream")
            loaded = "return arguments[0].naturalWidth"
            assert wait_for(lambda: driver.execute_script(loaded, stream), what="a frame") == 128
            first = stream.screenshot_as_png
            wait_for(lambda: stream.screenshot_as_png != first, what="the next frame")
            wait_for(lambda: int(driver.find_element(By.ID, "frames").text) > 0, what="stats")

            box = driver.find_element(By.ID, "classes")
            box.clear()
            box.send_keys("road, sky, person")
            driver.find_element(By.ID, "apply").click()
            wait_for(lambda: legend_names() == ["road", "sky", "person"], what="the new legend")
            assert app.seg.classes == ("road", "sky", "person")
            assert "classes: road, sky, person" in driver.find_element(By.ID, "message").text
    finally:
        driver.quit()
