"""Calibration images: read a folder or a video, preprocess exactly as the runtime does, cache.

The tensors are those the runtime's whole-image mode feeds the model
(``runtime.preprocess.resize_rgb`` to the manifest's input size, then ``normalize``), so the ranges
a quantiser measures are the ranges the deployed model sees. Frames are streamed: only the
``num`` tensors kept are held in memory. A compressed ``.npz`` cache, keyed by everything that
changes the tensors, makes repeated calibration runs skip the decoding.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

import numpy as np

from runtime import io_names
from runtime.errors import CalibrationError, InvalidImageError
from runtime.fsutil import atomic_write
from runtime.image import as_rgb_uint8, load_image
from runtime.manifest import PreprocessCfg
from runtime.preprocess import normalize, resize_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
CACHE_VERSION = 2  # bump when the tensors a given key maps to change (preprocessing, decoding)
CV2_AVAILABLE = find_spec("cv2") is not None
TQDM_AVAILABLE = find_spec("tqdm") is not None


class Frame(NamedTuple):
    """One decoded image: ``name`` (file name, or ``video.mp4#000123``) and ``rgb`` HxWx3 uint8."""

    name: str
    rgb: np.ndarray


@dataclass(frozen=True)
class CalibBatch:
    """Preprocessed calibration inputs.

    Attributes:
        tensors: float32 [N,3,H,W], (pixel - mean) / std after a bilinear resize to the input size.
        names: the N frame names, in order.
        skipped: names of unreadable files met while reading (empty for videos).
        cache_hit: True when the tensors came from the cache.
    """

    tensors: np.ndarray
    names: tuple[str, ...]
    skipped: tuple[str, ...]
    cache_hit: bool


def require_cv2():
    """Import OpenCV (video input) or raise an ImportError naming the extra."""
    if not CV2_AVAILABLE:
        raise ImportError(
            "reading videos needs OpenCV: pip install 'ovss-edge[calib]' "
            "(or opencv-python-headless)"
        )
    import cv2

    return cv2


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (png/jpg/jpeg/bmp/webp, any case), sorted by name."""
    files = (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files, key=lambda p: p.name)


def _check_source(source: str | Path) -> Path:
    path = Path(source)
    if not path.exists():
        raise CalibrationError(f"calibration source {str(path)!r} does not exist")
    if not (path.is_dir() or path.is_file()):
        raise CalibrationError(f"calibration source {str(path)!r} is neither a folder nor a file")
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        raise CalibrationError(
            f"calibration source {str(path)!r} is one image: pass a folder of "
            "images or a video file"
        )
    return path


def iter_frames(
    source: str | Path, limit: int | None = None, *, skipped: list[str] | None = None
) -> Iterator[Frame]:
    """Stream the readable frames of a folder of images or of a video file.

    Args:
        source: a folder (its image files, sorted by name; other files are ignored) or a video
            file OpenCV can read (frames named ``file.mp4#000123``).
        limit: stop after this many readable frames (None = all).
        skipped: if given, the names of unreadable or corrupt files are appended to it (each is
            also logged as a warning).
    Yields:
        Frame with ``rgb`` HxWx3 uint8 RGB [0,255].
    Raises:
        CalibrationError: the path is missing, is a single image, or is a file OpenCV cannot open.
    """
    path = _check_source(source)
    frames = _folder_frames(path, skipped) if path.is_dir() else _video_frames(path)
    try:
        yield from itertools.islice(frames, limit)  # stops before decoding frame limit + 1
    finally:
        frames.close()  # releases the video capture now, not at garbage collection


def _folder_frames(folder: Path, skipped: list[str] | None) -> Iterator[Frame]:
    bad = 0
    for path in image_files(folder):
        try:
            rgb = load_image(path)
        except InvalidImageError as e:
            log.warning("skipping unreadable calibration image: %s", e)
            bad += 1
            if skipped is not None:
                skipped.append(path.name)
            continue
        yield Frame(path.name, rgb)
    if bad:
        log.warning("skipped %d unreadable file(s) in %s", bad, folder)


def _video_frames(path: Path) -> Iterator[Frame]:
    cv2 = require_cv2()
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise CalibrationError(
                f"{str(path)!r} is not a folder and OpenCV cannot read it as a video"
            )
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if bgr.ndim == 3 and bgr.shape[2] == 3:
                bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            rgb = bgr
            yield Frame(f"{path.name}#{index:06d}", as_rgb_uint8(rgb))
            index += 1
    finally:
        cap.release()


def preprocess(rgb: np.ndarray, pre: PreprocessCfg) -> np.ndarray:
    """The runtime's whole-image preprocessing of one frame.

    Args:
        rgb (np.ndarray): HxWx3 uint8 RGB [0,255].
        pre: the manifest's preprocessing.
    Returns:
        np.ndarray: float32 [3,H',W'] with (H',W') = ``pre.input_size``.
    """
    return normalize(resize_rgb(as_rgb_uint8(rgb), tuple(pre.input_size)), pre)[0]


def cache_key(source: str | Path, pre: PreprocessCfg, num: int, skip: int) -> str:
    """sha256 hex of everything the tensors depend on (files listed by name, size and mtime)."""
    path = Path(source).resolve()
    if path.is_dir():
        files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in image_files(path)]
    else:
        st = path.stat()
        files = [(st.st_size, st.st_mtime_ns)]
    desc = {
        "version": CACHE_VERSION,
        "source": str(path),
        "files": files,
        "num": num,
        "skip": skip,
        "input_size": list(pre.input_size),
        "mean": list(pre.mean),
        "std": list(pre.std),
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode("utf-8")).hexdigest()


def calibration_batch(
    source: str | Path,
    pre: PreprocessCfg,
    num: int,
    *,
    skip: int = 0,
    cache_dir: str | Path | None = None,
) -> CalibBatch:
    """``num`` preprocessed frames of ``source``, after skipping its first ``skip`` readable ones.

    Args:
        source: folder of images or video file (see ``iter_frames``).
        pre: the model's preprocessing (``Manifest.preprocess``).
        num: frames to return, >= 1.
        skip: readable frames to pass over first (draw held-out frames disjoint from calibration).
        cache_dir: folder for the ``.npz`` cache (None = no cache).
    Returns:
        CalibBatch with ``tensors`` float32 [num,3,H,W], as the runtime's whole-image mode
        feeds them.
    Raises:
        CalibrationError: bad ``num``/``skip``, a bad source, or fewer than ``skip + num``
            readable frames.
    """
    if num < 1:
        raise CalibrationError(f"--num must be >= 1, got {num}")
    if skip < 0:
        raise CalibrationError(f"skip must be >= 0, got {skip}")
    path = _check_source(source)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{cache_key(path, pre, num, skip)}.npz"
        hit = _load_cache(cache, pre, num)
        if hit is not None:
            log.info("calibration: %d frames of %s from cache %s", num, path, cache)
            return hit
    batch = _compute(path, pre, num, skip)
    if cache is not None:
        _save_cache(cache, batch)
    return batch


def _progress(frames: Iterator[Frame], total: int, desc: str) -> Iterator[Frame]:
    if not TQDM_AVAILABLE:
        return frames
    from tqdm import tqdm

    return tqdm(frames, total=total, desc=desc, unit="img", leave=False)


def _compute(path: Path, pre: PreprocessCfg, num: int, skip: int) -> CalibBatch:
    h, w = pre.input_size
    tensors = np.empty((num, 3, h, w), dtype=np.float32)
    names, skipped, found = [], [], 0
    for i, frame in enumerate(
        _progress(iter_frames(path, skip + num, skipped=skipped), skip + num, "calibration images")
    ):
        found = i + 1
        if i >= skip:
            tensors[i - skip] = preprocess(frame.rgb, pre)
            names.append(frame.name)
    if found == 0:
        note = f" ({len(skipped)} unreadable file(s) skipped)" if skipped else ""
        raise CalibrationError(f"no readable images in {str(path)!r}{note}")
    if found < skip + num:
        usable = max(0, found - skip)
        after = f" ({usable} after skipping the first {skip})" if skip else ""
        raise CalibrationError(
            f"only {found} readable image(s) in {str(path)!r}{after}: "
            f"--num must be <= {usable}, got {num}"
        )
    log.info(
        "calibration: %d frames of %s preprocessed to %s (%d unreadable skipped)",
        num,
        path,
        tuple(tensors.shape),
        len(skipped),
    )
    return CalibBatch(tensors, tuple(names), tuple(skipped), cache_hit=False)


def feeds(
    batch: CalibBatch, extra: dict[str, np.ndarray] | None = None, input_name: str = io_names.IMAGE
) -> Iterator[dict[str, np.ndarray]]:
    """One ``{input_name: float32 [1,3,H,W], **extra}`` feed dict per frame (what quantisers
    consume).

    Args:
        batch: preprocessed frames.
        extra: constant feeds added to each dict (``text_embeddings`` for input-vocabulary
            graphs).
    """
    for i in range(len(batch.names)):
        yield {input_name: batch.tensors[i : i + 1], **(extra or {})}


def _save_cache(path: Path, batch: CalibBatch) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                tensors=batch.tensors,
                names=np.asarray(batch.names, dtype=str),
                skipped=np.asarray(batch.skipped, dtype=str),
            )

    try:
        atomic_write(path, write)
    except OSError as e:
        log.warning("cannot write the calibration cache %s: %s", path, e)


def _load_cache(path: Path, pre: PreprocessCfg, num: int) -> CalibBatch | None:
    """The cached batch, or None when absent or unusable (a corrupt file is logged and ignored)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            tensors, names, skipped = z["tensors"], z["names"], z["skipped"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        log.warning("ignoring corrupt calibration cache %s (%s): recomputing", path, e)
        return None
    want = (num, 3) + tuple(pre.input_size)
    if tensors.dtype != np.float32 or tensors.shape != want or names.shape != (num,):
        log.warning(
            "ignoring calibration cache %s: holds %s %s, expected float32 %s: recomputing",
            path,
            tensors.dtype,
            tensors.shape,
            want,
        )
        return None
    return CalibBatch(
        tensors, tuple(str(n) for n in names), tuple(str(s) for s in skipped), cache_hit=True
    )
