"""Segment one image on a Triton Inference Server model written by ``python -m export.triton``.

    python examples/triton_client.py --model DIR --name N --image photo.jpg
        [--url localhost:8000] [--out labels.png]

Does what the local runtime does in whole-image mode (``runtime.segmenter.Segmenter``,
``mode="whole"``): the method's short-side rescale if it has one, resize to the model input,
normalise (or not, for a uint8-input graph), send ``image`` (plus the folder's own text
embeddings, L2-normalised, for a ``vocab_mode: input`` folder), get ``logits`` back, and compute
the labels at the image's size with ``runtime.label_map``. The manifest comes from the deployable
folder ``DIR``; the tensors travel as KServe v2 JSON over ``tritonclient.http``. Needs
``pip install 'tritonclient[http]'``. Prints one JSON line (classes present, label counts).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from runtime import io_names
from runtime.image import as_rgb_uint8
from runtime.label_map import LabelMap, label_map
from runtime.manifest import Manifest, load_manifest
from runtime.preprocess import normalize, resize_rgb, short_side_size
from runtime.vocab import seen_vector


def model_input(rgb: np.ndarray, manifest: Manifest) -> np.ndarray:
    """The ``image`` tensor for one HxWx3 uint8 RGB frame, as the Segmenter's whole mode feeds it:
    float32 [1,3,S,S] normalised, uint8 [1,S,S,3] (uint8-nhwc) or uint8 [1,3,S,S] (uint8-nchw)."""
    pre = manifest.preprocess
    short = manifest.method_cfg.get("short_side")
    work = resize_rgb(rgb, short_side_size(rgb.shape[:2], short)) if short else rgb
    x = resize_rgb(work, pre.input_size)
    if pre.input_format == "float32-nchw":
        return normalize(x, pre)
    if pre.input_format == "uint8-nhwc":
        return np.ascontiguousarray(x[None])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def text_rows(folder: Path, manifest: Manifest) -> np.ndarray | None:
    """float32 [C, D] L2-normalised text embeddings of a ``vocab_mode: input`` folder, else None."""
    if manifest.vocab_mode != "input":
        return None
    emb = np.load(folder / manifest.text_embeddings_file, allow_pickle=False).astype(np.float32)
    return np.ascontiguousarray(emb / np.linalg.norm(emb, axis=1, keepdims=True))


def infer_logits(client, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [C, h, w]: the model's ``logits`` for ``feeds`` (JSON tensors, no binary data)."""
    from tritonclient.http import InferInput, InferRequestedOutput
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for key, value in feeds.items():
        tensor = InferInput(key, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value, binary_data=False)
        inputs.append(tensor)
    wanted = [InferRequestedOutput(io_names.LOGITS, binary_data=False)]
    result = client.infer(name, inputs, outputs=wanted)
    return result.as_numpy(io_names.LOGITS)[0].astype(np.float32, copy=False)


def segment(client, name: str, folder: str | Path, image: np.ndarray) -> LabelMap:
    """Labels of one image from the Triton model ``name`` serving ``folder``'s graph.

    Args:
        client: a ``tritonclient.http.InferenceServerClient``.
        name: the model name in the repository.
        folder: the deployable folder (for its manifest and text embeddings).
        image (np.ndarray): HxWx3 uint8 RGB [0,255].
    Returns:
        LabelMap with labels [H, W] at the image's size (the local runtime's whole-mode labels).
    """
    folder = Path(folder)
    manifest = load_manifest(folder)
    rgb = as_rgb_uint8(image)
    feeds = {io_names.IMAGE: model_input(rgb, manifest)}
    rows = text_rows(folder, manifest)
    if rows is not None:
        feeds[io_names.TEXT_EMBEDDINGS] = rows
    logits = infer_logits(client, name, feeds)
    if rows is not None:  # the folder's own seen classes get the bias a fixed graph has built in
        bias = seen_vector(manifest.classes, manifest.seen_classes, manifest.seen_bias)
        if bias is not None:
            logits = logits - np.asarray(bias, np.float32)[:, None, None]
    return label_map(
        logits,
        rgb.shape[:2],
        score_kind=manifest.score,
        score_scale=manifest.score_scale,
        background_thd=float(manifest.method_cfg.get("prob_thd") or 0.0),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="deployable folder (for its manifest)")
    p.add_argument("--name", required=True, help="model name in the Triton repository")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--url", default="localhost:8000", help="Triton HTTP endpoint host:port")
    p.add_argument("--out", help="write the labels as a PNG here")
    args = p.parse_args(argv)
    import tritonclient.http as httpclient
    from PIL import Image

    image = np.asarray(Image.open(args.image).convert("RGB"))
    client = httpclient.InferenceServerClient(url=args.url)
    out = segment(client, args.name, args.model, image)
    if args.out:
        Image.fromarray(out.labels).save(args.out)
    classes = load_manifest(args.model).classes
    present = {classes[i]: int(out.counts[i]) for i in out.present() if i < len(classes)}
    print(json.dumps({"shape": list(out.labels.shape), "pixels": present}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
