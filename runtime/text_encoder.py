"""Class names -> [C, D] text classifier on the device, without torch.

Runs the folder's ``text_encoder.onnx`` (written by ``export.build --text-encoder``) on CLIP BPE
tokens from ``runtime.tokenizer`` and builds the prompt ensemble exactly as the exporter's
``encode_classes``: per class, L2-normalise each template's features, average, renormalise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime import io_names
from runtime.backends import make_backend
from runtime.errors import ModelFolderError
from runtime.folder_files import folder_file
from runtime.graph_check import check_shape
from runtime.manifest import TextEncoderInfo
from runtime.tokenizer import ClipTokenizer
from runtime.vocab import validate_classes

EPS = 1e-12  # torch.nn.functional.normalize's floor on the norm


def prompts(classes: Sequence[str], templates: Sequence[str]) -> list[str]:
    """``template.format(name)`` for every class, templates innermost: C * T strings."""
    return [t.format(c) for c in classes for t in templates]


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows divided by max(norm, 1e-12), as ``torch.nn.functional.normalize(x, dim=-1)``."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def trimmed_length(tokens: np.ndarray) -> int:
    """Positions needed by [N, L] CLIP tokens: up to the last EOT (EOT has the largest id).

    Dropping the padding after it is exact for CLIP's causal, EOT-pooled text tower.
    """
    return int(np.asarray(tokens).argmax(axis=-1).max()) + 1


def prompt_ensemble(features: np.ndarray, num_classes: int) -> np.ndarray:
    """Normalise each prompt, average over templates, renormalise.

    Args:
        features (np.ndarray): float [C*T, D] text features, class-major (as ``prompts``).
        num_classes: C.
    Returns:
        np.ndarray: float32 [C, D], unit rows.
    """
    feats = l2_normalize(np.asarray(features, dtype=np.float32))
    if feats.ndim != 2 or feats.shape[0] % max(num_classes, 1):
        raise ValueError(f"features {feats.shape} do not split into {num_classes} classes")
    mean = feats.reshape(num_classes, -1, feats.shape[1]).mean(axis=1)
    return l2_normalize(mean).astype(np.float32)


class TextEncoder:
    """The folder's CLIP text tower + tokenizer: class names -> [C, D] classifier.

    Args:
        folder: deployable folder whose manifest has a ``text_encoder`` entry.
        info: that entry.
        verify: check both files' sha256 against the manifest.
        batch: prompts per graph run.
        backend_options: passed to the onnxruntime backend (providers, threads).
    Raises:
        ModelFolderError: missing or modified files, a graph with other inputs/outputs.
        ImportError: the ``text`` extra (regex, ftfy) or onnxruntime is not installed.
    """

    def __init__(
        self,
        folder: str | Path,
        info: TextEncoderInfo,
        *,
        verify: bool = True,
        batch: int = 64,
        **backend_options,
    ):
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.folder, self.info, self.batch = Path(folder), info, batch
        graph = _checked(self.folder, info.file, info.sha256, verify, "file")
        vocab = _checked(self.folder, info.vocab_file, info.vocab_sha256, verify, "vocab_file")
        self.tokenizer = ClipTokenizer(vocab, info.context_length)
        self.backend = make_backend("onnxruntime", str(graph), **backend_options)
        try:
            self._check_graph(graph)
        except BaseException:
            self.backend.close()
            raise

    def _check_graph(self, graph: Path) -> None:
        """The text graph takes int64 tokens [N, L] (L within the context length) and gives
        float32 features [N, embed_dim] (where the graph fixes them).

        Raises:
            ModelFolderError: other names, dtypes or shapes.
        """
        ins, outs = self.backend.input_specs, self.backend.output_specs
        feats = next((o for o in outs if o.name == io_names.TEXT_FEATURES), None)
        if tuple(i.name for i in ins) != (io_names.TEXT_TOKENS,) or feats is None:
            names = (self.backend.input_names, self.backend.output_names)
            raise ModelFolderError(
                f"{str(graph)!r} has inputs/outputs {names}, expected "
                f"({io_names.TEXT_TOKENS!r},) / {io_names.TEXT_FEATURES!r}"
            )
        tokens, what = ins[0], f"the manifest's text_encoder (embed_dim {self.info.embed_dim})"
        if tokens.dtype != "int64" or feats.dtype != "float32":
            raise ModelFolderError(
                f"{str(graph)!r} maps {tokens.dtype} tokens to {feats.dtype} features; "
                "int64 -> float32 expected"
            )
        check_shape(tokens.name, tokens.shape, (-1, -1), what)
        check_shape(feats.name, feats.shape, (-1, self.info.embed_dim), what)
        length = tokens.shape[1]
        if isinstance(length, int) and length > self.info.context_length:
            raise ModelFolderError(
                f"{str(graph)!r} takes {length} tokens, more than the manifest's "
                f"text_encoder.context_length {self.info.context_length}"
            )

    def features(self, texts: Sequence[str]) -> np.ndarray:
        """Raw text features of N texts, float32 [N, D] (not normalised), ``batch`` per run."""
        tokens = self.tokenizer(texts)
        out = np.zeros((len(tokens), self.info.embed_dim), dtype=np.float32)
        for i in range(0, len(tokens), self.batch):
            chunk = tokens[i : i + self.batch]
            feeds = {io_names.TEXT_TOKENS: np.ascontiguousarray(chunk[:, : trimmed_length(chunk)])}
            got = self.backend(feeds, [io_names.TEXT_FEATURES])[io_names.TEXT_FEATURES]
            out[i : i + self.batch] = got
        return out

    def encode(self, classes: Sequence[str]) -> np.ndarray:
        """The prompt-ensemble classifier of ``classes``.

        Args:
            classes: C class names (validated: non-empty, no blanks or duplicates).
        Returns:
            np.ndarray: float32 [C, D], unit rows, row i for ``classes[i]`` (stripped).
        Raises:
            VocabularyError: bad names.
        """
        names = validate_classes(classes)
        feats = self.features(prompts(names, self.info.templates))
        return prompt_ensemble(feats, len(names))

    def close(self) -> None:
        """Release the backend."""
        self.backend.close()

    def __enter__(self) -> TextEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _checked(folder: Path, name: str, sha256: str, verify: bool, key: str) -> Path:
    """One text encoder file (``key``: "file" or "vocab_file"), via ``folder_file``."""
    return folder_file(
        folder,
        name,
        sha256,
        what="text encoder graph" if key == "file" else "BPE vocabulary",
        field=f"text_encoder.{key}",
        sha_field=f"text_encoder.{'sha256' if key == 'file' else 'vocab_sha256'}",
        verify=verify,
    )
