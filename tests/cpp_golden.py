"""Golden files for the C++ runtime's parity tests, written by the Python runtime.

    python -m tests.cpp_golden --out DIR [--no-camvid]

Exports tiny deployable folders with the real builder (MaskCLIP on the random-init test
backbones; SCLIP; ZegCLIP, whose graphs also output ``mask_logits``), segments a fixed set of
images with ``runtime.segmenter.Segmenter`` (onnxruntime, one thread) and writes, under ``DIR``:

- ``folders/<name>/``: the deployable folders (float32 and uint8 image inputs, host and in-graph
  post-processing, ZegCLIP fixed and vocabulary-as-input with a seen-class bias);
- ``images/<name>.png``: the inputs (synthetic sizes below and above the model input, gray, RGBA,
  and the first two CamVid test frames when ``../shared/data/camvid`` is present);
- ``seg/<case>.labels.npy`` (int32 [H,W]) and ``seg/<case>.logits.npy`` (float32 [C,h,w]; flush
  slide plans: [C,Hp,Wp]), and
  ``seg/<case>.scores.npy`` (float32 [H,W]) for the cases with a score threshold;
- ``label_map/<name>.{logits,labels,scores}.npy``: ``runtime.label_map`` (the exact reference) on
  near-ties, duplicated classes, padded spans, a 1xN grid, 150 classes and real-image-like scores
  (colour distances of an image's pixels to class prototypes), with thresholds and score maps;
- ``resize/<n>.in.npy`` / ``<n>.out.npy``: uint8 images and ``runtime.preprocess.resize_rgb``
  of each (OpenCV INTER_LINEAR);
- ``video/clip.mp4``: a small mp4v clip for the camera program;
- ``bad_images/``: a 16-bit PNG and a file that is not an image (error tests);
- ``index.json``: every case with its mode, window count and file names (paths relative to DIR).

ctest runs this as its fixture-setup test; the C++ tests then compare labels exactly (by both of
their label paths), logits within 1e-5 and scores within 1e-6. One exception, named per case
(``exp_tie_atol``): the flush slides of ``mask_logits`` graphs take a float32 sigmoid per pixel,
and numpy's SIMD float32 exp and the C library's expf differ by an ulp on some inputs, so a pixel
whose two top scores are that close (the random ZegCLIP head's scores all lie within 0.11) may
take the other one; the C++ test lets a label differ only there, and counts those pixels. Needs
the export extras (torch, open_clip) and OpenCV for the clip.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAMVID_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid" / "test"
CLASSES = "cat,dog,car,tree"
# |score difference| under which two classes count as tied in the float32 sigmoid path: a few
# ulps of the scores (about 0.5 here: ulp 6e-8) for each class, as exp differs by one ulp.
EXP_TIE_ATOL = 2.5e-7
# (input HxW, output HxW, channels): up- and down-scaling, odd and exact (2x, 4x) factors, and
# degenerate sizes.
RESIZE_CASES = (
    ((37, 53), (224, 224), 3),
    ((300, 410), (224, 224), 3),
    ((224, 224), (100, 150), 3),
    ((17, 9), (64, 31), 3),
    ((360, 480), (224, 224), 3),
    ((5, 5), (3, 7), 3),
    ((1, 1), (4, 4), 3),
    ((500, 20), (7, 300), 3),
    ((224, 224), (224, 100), 3),
    ((99, 1000), (99, 77), 3),
    ((40, 30), (13, 90), 1),
    ((53, 21), (31, 13), 3),
    ((60, 46), (26, 20), 3),
    ((47, 33), (39, 29), 3),
    ((64, 48), (32, 24), 3),
    ((32, 24), (64, 48), 3),
    ((128, 96), (32, 24), 4),
)


@dataclass(frozen=True)
class Case:
    """One golden segmentation: a folder, an image, the mode asked for, a score threshold
    (> 0: unknown pixels, and the score map is saved too) and the slide plan asked for (None: the
    manifest's, i.e. ``flush``; both runtimes are given the same)."""

    folder: str
    image: str
    mode: str = "auto"
    threshold: float = 0.0
    slide_edge: str | None = None

    @property
    def name(self) -> str:
        suffix = f"__t{self.threshold:g}" if self.threshold else ""
        suffix += f"__{self.slide_edge}" if self.slide_edge else ""
        return f"{self.folder}__{self.image}__{self.mode}{suffix}"


def smooth_image(h: int, w: int, seed: int, channels: int = 3) -> np.ndarray:
    """Random blobs (a bilinear blow-up of a coarse random grid), so label maps have regions."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, size=(h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR))
    if channels == 1:
        return np.ascontiguousarray(rgb[:, :, 0])
    if channels == 4:
        alpha = rng.integers(0, 256, size=(h, w, 1)).astype(np.uint8)
        return np.concatenate([rgb, alpha], axis=2)
    return rgb


def write_images(out: Path, camvid: bool) -> list[str]:
    """Write the input PNGs; returns their names (file stems)."""
    from PIL import Image

    specs = {
        "small_160x200": (160, 200, 3),
        "exact_224x224": (224, 224, 3),
        "tall_100x60": (100, 60, 3),
        "large_300x410": (300, 410, 3),
        "gray_180x200": (180, 200, 1),
        "rgba_200x210": (200, 210, 4),
        "gray_260x300": (260, 300, 1),
    }
    (out / "images").mkdir(parents=True)
    for seed, (name, (h, w, c)) in enumerate(specs.items()):
        Image.fromarray(smooth_image(h, w, seed, c)).save(out / "images" / f"{name}.png")
    names = list(specs)
    if camvid and CAMVID_TEST.is_dir():
        for i, src in enumerate(sorted(CAMVID_TEST.glob("*.png"))[:2]):
            shutil.copyfile(src, out / "images" / f"camvid{i}.png")
            names.append(f"camvid{i}")
    return names


def write_bad_images(out: Path) -> dict[str, str]:
    """Inputs the runtimes must refuse with a clear message: 16-bit, and not an image at all."""
    from PIL import Image

    bad = out / "bad_images"
    bad.mkdir(parents=True)
    Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)).save(bad / "gray16.png")
    (bad / "garbage.png").write_bytes(b"this is not a PNG file\n" * 4)
    return {"sixteen_bit": "bad_images/gray16.png", "garbage": "bad_images/garbage.png"}


def export_folders(out: Path) -> dict[str, Path]:
    """The tiny folders: ViT fixed, ViT vocab-as-input (rescaled rows, so the runtime's L2
    normalisation matters), ResNet fixed (feature stride 32) with random text rows (its random
    text tower embeds every class alike)."""
    from export.builders import build_maskclip, build_training_free
    from export.config import ExportCfg
    from runtime.fsutil import sha256_file
    from training.clip_loader import load_clip
    from training.models import text_dim

    names = ("vit_fixed", "vit_input", "rn_fixed", "sclip_method", "vit_u8_nhwc", "vit_u8_graph")
    names += ("vit_graph", "zegclip_fixed", "zegclip_input")
    folders = {name: out / "folders" / name for name in names}
    base = dict(
        method="maskclip",
        backbone="ovss-tiny-vit",
        classes=CLASSES,
        image_size=224,
        templates="single",
    )
    build_maskclip(ExportCfg.create(**base, output=str(folders["vit_fixed"])))
    build_maskclip(ExportCfg.create(**base, output=str(folders["vit_input"]), vocab_mode="input"))
    emb_path = folders["vit_input"] / "text_embeddings.npy"
    emb = np.load(emb_path)
    scales = np.array([0.5, 2.0, 3.7, 0.9], dtype=np.float32)[:, None]
    np.save(emb_path, (emb * scales).astype(np.float32))
    # the folder's manifest records the file's sha256: record the rescaled file's
    manifest_path = folders["vit_input"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["text_embeddings_sha256"] = sha256_file(emb_path)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    dim = text_dim(load_clip("ovss-tiny-rn", "none", 0))
    rng = np.random.default_rng(7)
    rows = rng.standard_normal((len(CLASSES.split(",")), dim)).astype(np.float32)
    rows_path = out / "rn_text.npy"
    np.save(rows_path, rows / np.linalg.norm(rows, axis=1, keepdims=True))
    # Random ResNet features saturate key smoothing (every class ties): plain dense logits here.
    rn = {**base, "backbone": "ovss-tiny-rn"}
    build_maskclip(
        ExportCfg.create(
            **rn,
            output=str(folders["rn_fixed"]),
            text_embeddings=str(rows_path),
            key_smoothing=False,
            prompt_denoising=False,
        )
    )
    # The method's own inference settings from the manifest: slide step, short side, background
    # threshold (both runtimes must follow them by default).
    build_training_free(
        ExportCfg.create(
            method="sclip",
            backbone="ovss-tiny-vit",
            classes=CLASSES,
            image_size=64,
            templates="single",
            slide_stride=48,
            short_side=96,
            prob_thd=0.9,
            output=str(folders["sclip_method"]),
        )
    )
    # Graphs that normalise uint8 input themselves, and in-graph labels / scores (160x200: the
    # small image's size, so whole mode uses them; other sizes fall back to the host).
    build_maskclip(
        ExportCfg.create(**base, output=str(folders["vit_u8_nhwc"]), input_format="uint8-nhwc")
    )
    graph = dict(postprocess="graph", output_size=(160, 200))
    u8_graph = dict(output=str(folders["vit_u8_graph"]), input_format="uint8-nchw", **graph)
    build_maskclip(ExportCfg.create(**base, **u8_graph))
    build_maskclip(ExportCfg.create(**base, output=str(folders["vit_graph"]), **graph))
    export_zegclip(out, folders)
    return folders


def export_zegclip(out: Path, folders: dict[str, Path]) -> None:
    """ZegCLIP at 64 px (slide step 53, flush by default), fixed vocabulary and vocabulary as
    input, seen classes cat, dog (bias 0.1). Its graphs also output ``mask_logits``: flush slides
    upsample those and take sigmoid - seen bias per pixel. Given text rows (4 well-separated
    random unit rows): the random text tower embeds every class alike."""
    from export.builders import build_zegclip
    from export.config import ExportCfg

    rng = np.random.default_rng(11)
    rows = rng.standard_normal((len(CLASSES.split(",")), 64)).astype(np.float32)
    rows_path = out / "zegclip_text.npy"
    np.save(rows_path, rows / np.linalg.norm(rows, axis=1, keepdims=True))
    zeg = dict(
        method="zegclip",
        backbone="ovss-tiny-vit",
        classes=CLASSES,
        image_size=64,
        seen="cat,dog",
        text_embeddings=str(rows_path),
    )
    build_zegclip(ExportCfg.create(**zeg, output=str(folders["zegclip_fixed"])))
    build_zegclip(ExportCfg.create(**zeg, output=str(folders["zegclip_input"]), vocab_mode="input"))


def cases_for(images: list[str]) -> list[Case]:
    """Every image on the fixed ViT; a subset (plus forced modes) on the others."""
    cases = [Case("vit_fixed", name) for name in images]
    cases += [
        Case("vit_fixed", "small_160x200", "slide"),
        Case("vit_fixed", "large_300x410", "whole"),
    ]
    wanted = ("small_160x200", "large_300x410", "gray_260x300", "camvid0")
    subset = [n for n in wanted if n in images]
    cases += [Case("vit_input", n) for n in subset] + [Case("rn_fixed", n) for n in subset]
    cases += [Case("sclip_method", n) for n in subset + ["tall_100x60"]]
    if "camvid0" in images:
        cases += [Case("vit_fixed", "camvid0", "whole"), Case("rn_fixed", "camvid0", "whole")]
    # Open set: T = 0.5 marks some of the random model's pixels unknown; on the SCLIP folder it
    # is applied after the manifest's background threshold 0.9.
    cases += [
        Case("vit_fixed", "large_300x410", threshold=0.5),
        Case("vit_fixed", "small_160x200", threshold=0.5),
        Case("sclip_method", "large_300x410", threshold=0.95),
    ]
    # uint8 input (whole and slide; host labels), in-graph labels with and without a threshold,
    # and a size the graph was not made for.
    cases += [Case("vit_u8_nhwc", "large_300x410"), Case("vit_u8_nhwc", "small_160x200")]
    cases += [
        Case(f, "small_160x200", threshold=t)
        for f in ("vit_u8_graph", "vit_graph")
        for t in (0, 0.3)
    ]
    cases += [Case("vit_u8_graph", "tall_100x60"), Case("vit_u8_graph", "large_300x410")]
    # The feature-grid slide plan, asked for explicitly (the others follow the manifest: flush).
    cases += [
        Case("vit_fixed", "large_300x410", slide_edge="grid"),
        Case("vit_fixed", "small_160x200", "slide", slide_edge="grid"),
        Case("sclip_method", "large_300x410", threshold=0.95, slide_edge="grid"),
        Case("vit_u8_nhwc", "large_300x410", slide_edge="grid"),
    ]
    # ZegCLIP (mask_logits, seen bias; the random head's scores sit within 0.1 of each other, so
    # the bias keeps cat and dog out of the labels): flush slides (2 and 12 windows), whole mode,
    # the grid plan (logits - bias from the graph, at feature resolution), an open-set threshold.
    for folder in ("zegclip_fixed", "zegclip_input"):
        cases += [Case(folder, "tall_100x60"), Case(folder, "small_160x200")]
        cases += [Case(folder, "small_160x200", "whole"), Case(folder, "tall_100x60", "whole")]
        cases += [Case(folder, "small_160x200", slide_edge="grid")]
    cases += [Case("zegclip_fixed", "large_300x410", threshold=0.5)]
    return cases


def read_png(path: Path) -> np.ndarray:
    """The PNG as stored (gray stays HxW, RGBA keeps alpha): the runtime applies its policy."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im).copy()


def run_cases(out: Path, folders: dict[str, Path], cases: list[Case]) -> list[dict]:
    """Segment every case with the Python runtime and save labels and logits."""
    from runtime.segmenter import Segmenter

    (out / "seg").mkdir(parents=True)
    rows = []
    for case in cases:
        opts = dict(mode=case.mode, threads=1, score_threshold=case.threshold)
        opts["slide_edge"] = case.slide_edge  # None: the manifest's (flush)
        with Segmenter(folders[case.folder], "onnxruntime", **opts) as seg:
            res = seg(read_png(out / "images" / f"{case.image}.png"), scores=case.threshold > 0)
            masks = any(o.name == "mask_logits" for o in seg.manifest.outputs)
            float32_exp = masks and res.mode == "slide" and seg.slide_edge == "flush"
        np.save(out / "seg" / f"{case.name}.labels.npy", res.labels.astype(np.int32))
        logits = None  # the graph's own labels: no logits
        if res.logits is not None:
            logits = f"seg/{case.name}.logits.npy"
            np.save(out / logits, res.logits.astype(np.float32))
        scores = None
        if res.scores is not None:
            scores = f"seg/{case.name}.scores.npy"
            np.save(out / scores, res.scores.astype(np.float32))
        rows.append(
            {
                "name": case.name,
                "score_threshold": case.threshold,
                "scores": scores,
                "folder": f"folders/{case.folder}",
                "image": f"images/{case.image}.png",
                "mode_arg": case.mode,
                "slide_edge": case.slide_edge,
                "mode": res.mode,
                "windows": res.windows,
                "image_hw": list(res.labels.shape),
                "classes_present": list(res.classes_present),
                "postprocess": res.postprocess,
                "labels": f"seg/{case.name}.labels.npy",
                "logits": logits,
                "exp_tie_atol": EXP_TIE_ATOL if float32_exp else 0.0,
            }
        )
    return rows


# (name, classes, feature h x w, output H x W, span / output, label_map options): real-image-like
# scores with and without thresholds and score maps, then the awkward cases.
LABEL_MAP_CASES = (
    ("real20", 20, (23, 40), (360, 640), 1.0, {}),
    ("real20_open", 20, (23, 40), (360, 640), 1.0, {"score_threshold": 0.3, "with_scores": True}),
    (
        "real20_slide_bg",
        20,
        (23, 40),
        (331, 597),
        1.1,
        {"score_threshold": 0.25, "background_thd": 0.5},
    ),
    (
        "real150_open",
        150,
        (23, 40),
        (360, 640),
        1.0,
        {"score_threshold": 0.05, "with_scores": True},
    ),
    (
        "cosine20_scale100",
        20,
        (23, 40),
        (360, 640),
        1.0,
        {"score_scale": 100.0, "score_threshold": 0.3},
    ),
    (
        "probability12",
        12,
        (23, 40),
        (360, 640),
        1.0,
        {"score_kind": "probability", "score_threshold": 0.4, "with_scores": True},
    ),
    # p_top = 1/8 + 0..3e-8 (classes 1e-7 apart): T splits the pixels on differences that small.
    ("near_ties", 8, (6, 7), (50, 61), 1.0, {"score_threshold": 0.125000015, "with_scores": True}),
    ("row", 5, (1, 9), (5, 40), 1.0, {"with_scores": True}),
)


def label_map_logits(name: str, rgb: np.ndarray, classes: int, hw: tuple[int, int]) -> np.ndarray:
    """float32 [classes, h, w] for a LABEL_MAP_CASES entry. Real-image-like: minus the squared
    colour distance of the image (box-averaged to h x w) to class prototypes (its own pixels,
    jittered), / 2 * 12^2: regions follow the image's edges, similar prototypes nearly tie."""
    from PIL import Image

    rng = np.random.default_rng(len(name) * 1000 + classes)
    if name in ("near_ties", "row"):  # classes 1e-7 apart, odd classes duplicating even ones
        base = rng.standard_normal(hw)
        logits = np.stack([base + (c % 3) * 1e-7 * rng.choice([-1, 1], hw) for c in range(classes)])
        logits[1::2] = logits[0::2][: classes // 2]
        return logits.astype(np.float32)
    small = np.asarray(Image.fromarray(rgb).resize(hw[::-1], Image.BOX), dtype=np.float64)
    pixels = small.reshape(-1, 3)
    protos = pixels[rng.choice(len(pixels), classes)] + rng.normal(0, 8, (classes, 3))
    dist2 = ((small[None] - protos[:, None, None, :]) ** 2).sum(axis=-1)
    logits = -dist2 / (2 * 12.0**2)
    if name.startswith("cosine"):  # raw-cosine-like values: softmax needs the scale 100
        logits = logits / 100.0
    if name.startswith("probability"):  # sigmoid scores, several classes can be above 0.5
        logits = 1.0 / (1.0 + np.exp(-(logits + 1.5) * 3.0))
    return logits.astype(np.float32)


def write_label_maps(out: Path, images: list[str]) -> list[dict]:
    """``runtime.label_map`` (method exact, the reference) on LABEL_MAP_CASES; the real-image
    scores come from the first CamVid frame when present, else the large synthetic image."""
    from runtime.label_map import label_map

    (out / "label_map").mkdir(parents=True)
    rgb = read_png(out / "images" / f"{'camvid0' if 'camvid0' in images else 'large_300x410'}.png")
    rows = []
    for name, classes, hw, out_hw, span, options in LABEL_MAP_CASES:
        logits = label_map_logits(name, rgb, classes, hw)
        span_hw = (out_hw[0] * span, out_hw[1] * span)
        res = label_map(logits, out_hw, span_hw, method="exact", **options)
        files = {kind: f"label_map/{name}.{kind}.npy" for kind in ("logits", "labels", "scores")}
        np.save(out / files["logits"], logits)
        np.save(out / files["labels"], res.labels.astype(np.int32))
        if res.scores is not None:
            np.save(out / files["scores"], res.scores.astype(np.float32))
        opts = {"score_kind": "softmax", "score_scale": 1.0, "score_threshold": 0.0}
        opts.update({"background_thd": 0.0, "with_scores": False, **options})
        row = {"name": name, "out_hw": list(out_hw), "span_hw": list(span_hw), **opts}
        rows.append({**row, **files, "scores": files["scores"] if res.scores is not None else None})
    return rows


def write_resize(out: Path) -> list[dict]:
    """Random uint8 images and the Python runtime's resize of each (no smoothing: worst case):
    the fixed cases, then 24 random sizes from 1 to 79 pixels."""
    from runtime.preprocess import resize_rgb

    (out / "resize").mkdir(parents=True)
    rng = np.random.default_rng(123)
    sizes = rng.integers(1, 80, size=(24, 4))
    cases = RESIZE_CASES + tuple(
        ((int(h), int(w)), (int(oh), int(ow)), 3) for h, w, oh, ow in sizes
    )
    rows = []
    for i, ((h, w), (oh, ow), c) in enumerate(cases):
        img = rng.integers(0, 256, size=(h, w, c) if c > 1 else (h, w), dtype=np.uint8)
        res = resize_rgb(img, (oh, ow))
        np.save(out / "resize" / f"{i}.in.npy", img)
        np.save(out / "resize" / f"{i}.out.npy", res)
        rows.append(
            {"input": f"resize/{i}.in.npy", "output": f"resize/{i}.out.npy", "size_hw": [oh, ow]}
        )
    return rows


def write_video(out: Path, frames: int = 20, hw: tuple[int, int] = (96, 128)) -> dict:
    """A short mp4v clip of drifting blobs for the camera program."""
    import cv2

    (out / "video").mkdir(parents=True)
    path = out / "video" / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (hw[1], hw[0]))
    base = smooth_image(hw[0] + frames, hw[1] + frames, seed=99)
    for i in range(frames):
        crop = np.ascontiguousarray(base[i : i + hw[0], i : i + hw[1]])
        writer.write(cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    writer.release()
    return {"path": "video/clip.mp4", "frames": frames, "hw": list(hw)}


def plain_folder(folder: Path) -> Path:
    """``folder`` as a plain folder: the exporter's generation layout (``.gen/<id>/`` holding
    the files, ``.current`` and the visible names symlinks) replaced by regular files, so the C++
    tests can copy and edit them file by file (they build the generation layout themselves)."""
    flat = folder.with_name(folder.name + ".plain")
    shutil.copytree(folder, flat, symlinks=False, ignore=shutil.ignore_patterns(".gen", ".current"))
    shutil.rmtree(folder)
    flat.rename(folder)
    return folder


def write_golden(out: str | Path, camvid: bool = True) -> Path:
    """Write every golden file under ``out`` (emptied first); returns the index path."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    images = write_images(out, camvid)
    folders = {name: plain_folder(f) for name, f in export_folders(out).items()}
    index = {
        "cases": run_cases(out, folders, cases_for(images)),
        "label_maps": write_label_maps(out, images),
        "resize": write_resize(out),
        "video": write_video(out),
        "bad_images": write_bad_images(out),
        "logit_atol": 1e-5,
    }
    path = out / "index.json"
    path.write_text(json.dumps(index, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.cpp_golden", description=__doc__.splitlines()[0]
    )
    p.add_argument("--out", required=True, help="folder to (re)create")
    p.add_argument("--no-camvid", action="store_true", help="synthetic images only")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    path = write_golden(args.out, camvid=not args.no_camvid)
    n = len(json.loads(path.read_text())["cases"])
    print(f"wrote {n} segmentation cases and resize/video goldens to {path.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
