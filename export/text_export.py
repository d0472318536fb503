"""Export CLIP's text tower as ``text_encoder.onnx`` plus its BPE vocabulary, for vocabulary changes
on the device without torch (``runtime.text_encoder``).

The graph maps ``io_names.TEXT_TOKENS`` int64 [N, L] (N dynamic, L up to the context length;
the runtime trims trailing padding) to ``io_names.TEXT_FEATURES`` float32 [N, D]: ``encode_text``
exactly, NOT normalised (the prompt ensemble normalises each prompt itself). Export happens in
memory first (trace, checker, tokenizer check, parity with PyTorch); ``write_text_encoder`` then
writes both files atomically.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from export.onnx_export import ExportError, _trace
from export.parity import ort_outputs
from runtime import __version__, io_names
from runtime.fsutil import atomic_write, sha256_file
from runtime.manifest import TextEncoderInfo
from runtime.text_encoder import prompt_ensemble, prompts, trimmed_length
from runtime.tokenizer import VOCAB_FILE, ClipTokenizer
from training.clip_loader import LoadedClip
from training.text_classifier import _can_truncate

log = logging.getLogger(__name__)
TEXT_ENCODER_FILE = "text_encoder.onnx"
# Traced with the first three; parity on all (another N, HTML, unicode, a prompt cut at 77 tokens).
PARITY_PROMPTS = (
    "a photo of a cat.",
    "there is a traffic light in the scene.",
    "a bad photo of the dog.",
    "Fish &amp; Chips, café, 東京, 🙂",
    "it's a photo of a potted plant",
    " ".join(["long"] * 120),
    "a",
)


class TextEncoderOnnxModel(nn.Module):
    """Used only for ONNX export: CLIP's ``encode_text`` (unnormalised) as a graph whose token
    length L may be anything up to the context length.

    Exact for causal, EOT-pooled towers (checked by ``_can_truncate``): the EOT token never attends
    to the padding after it, so the runtime drops trailing padding and pays for ~10-20 positions
    instead of 77. Same computation as open_clip's ``CLIP.encode_text``, with the positional
    embedding and causal mask sliced to L.

    forward(tokens int64 [N, L]) -> float32 [N, D].
    """

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        if not _can_truncate(clip_model):
            raise ExportError("--text-encoder supports causal, EOT-pooled CLIP text towers only")
        _check_blocks(clip_model)
        self.clip_model = clip_model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        m, n = self.clip_model, tokens.shape[1]
        x = m.token_embedding(tokens) + m.positional_embedding[:n]
        mask = m.attn_mask[:n, :n].to(x.dtype)
        for block in m.transformer.resblocks:  # batch-first throughout
            x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)]  # EOT has the largest id
        proj = m.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else (x if proj is None else x @ proj)
        return x.float()


def _attention(attn: nn.MultiheadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``attn(x, x, x, attn_mask=mask)`` on batch-first x [N, L, W], written out so that L stays
    a dynamic axis when traced (``nn.MultiheadAttention`` bakes the traced L into a Reshape)."""
    n, _, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, -1, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-2, -1)) * (width // heads) ** -0.5 + mask
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(n, -1, width)
    return attn.out_proj(out)


def _check_blocks(clip_model: nn.Module) -> None:
    """The written-out forward covers open_clip's plain residual attention blocks only."""
    tr = clip_model.transformer
    ok = getattr(tr, "batch_first", False) and all(
        isinstance(getattr(b, "attn", None), nn.MultiheadAttention)
        and b.attn.in_proj_weight is not None
        and b.attn.batch_first
        and not hasattr(b, "ln_1_kv")
        for b in tr.resblocks
    )
    if not ok:
        raise ExportError("--text-encoder supports open_clip's standard CLIP text transformer only")


@dataclass(frozen=True)
class TextExport:
    """A checked text-encoder graph, not yet written.

    Attributes:
        model: the ONNX graph (TEXT_TOKENS -> TEXT_FEATURES).
        vocab_path: the BPE merges file the model's tokenizer reads (copied into the folder).
        context_length, embed_dim: L and D.
        max_abs_diff: max |feature difference| onnxruntime vs PyTorch over PARITY_PROMPTS.
    """

    model: onnx.ModelProto
    vocab_path: Path
    context_length: int
    embed_dim: int
    max_abs_diff: float


def check_tokenizer(clip: LoadedClip) -> ClipTokenizer:
    """The torch-free tokenizer equivalent to ``clip.tokenizer``, or ExportError.

    Only open_clip's CLIP BPE ``SimpleTokenizer`` with ``lower`` cleaning and plain truncation is
    reproduced; its vocabulary and merges must equal ``runtime.tokenizer``'s exactly.
    """
    ref = clip.tokenizer
    if (
        not isinstance(ref, open_clip.tokenizer.SimpleTokenizer)
        or ref.reduction_fn is not None
        or ref.clean_fn is not open_clip.tokenizer.get_clean_fn("lower")
    ):
        raise ExportError(
            f"--text-encoder supports CLIP's BPE tokenizer (lower-case cleaning, "
            f"truncation) only; {clip.backbone} uses {type(ref).__name__}"
        )
    tok = ClipTokenizer(open_clip.tokenizer.default_bpe(), ref.context_length)
    if tok.encoder != ref.encoder or tok.ranks != ref.bpe_ranks:
        raise ExportError(
            f"{clip.backbone}'s tokenizer vocabulary differs from open_clip's "
            f"{VOCAB_FILE}: cannot reproduce it on the device"
        )
    length = int(clip.model.positional_embedding.shape[0])
    if length != ref.context_length:
        raise ExportError(
            f"tokenizer context length {ref.context_length} != the text tower's {length}"
        )
    return tok


def export_text_encoder(*, clip: LoadedClip, opset: int, atol: float = 1e-4) -> TextExport:
    """Trace ``clip.model.encode_text``, check it, and prove parity with PyTorch (nothing written).

    Args:
        clip: the CLIP whose text tower encodes the export's own vocabulary.
        opset: ONNX opset (>= 17).
        atol: max |feature difference| allowed between onnxruntime and PyTorch.
    Raises:
        ExportError: unsupported tokenizer, checker failure, different token ids, or parity failure.
    """
    tok = check_tokenizer(clip)
    tokens = tok(PARITY_PROMPTS)
    ref_ids = clip.tokenizer(list(PARITY_PROMPTS)).numpy()
    if not np.array_equal(tokens, ref_ids):
        raise ExportError(
            "runtime.tokenizer and open_clip disagree on the parity prompts' token ids"
        )
    wrapper = TextEncoderOnnxModel(clip.model).eval()
    with torch.no_grad():
        ref = wrapper(torch.from_numpy(tokens)).numpy()
    if not np.all(np.isfinite(ref)):
        raise ExportError("PyTorch text features are not finite")
    # Traced shorter than the context, so the L-slices stay in the graph as dynamic ops.
    dummy = {
        io_names.TEXT_TOKENS: torch.from_numpy(tokens[:3, : trimmed_length(tokens[:3])].copy())
    }
    axes = {
        io_names.TEXT_TOKENS: {0: "num_prompts", 1: "num_tokens"},
        io_names.TEXT_FEATURES: {0: "num_prompts"},
    }
    proto = _trace(wrapper, dummy, [io_names.TEXT_FEATURES], axes, opset)
    # Parity at the full context and trimmed to the longest prompt (what the runtime feeds).
    diff = 0.0
    for length in (tokens.shape[1], trimmed_length(tokens[:5])):
        got = ort_outputs(
            proto.SerializeToString(),
            {
                io_names.TEXT_TOKENS: tokens[:, :length]
                if length == tokens.shape[1]
                else tokens[:5, :length]
            },
            [io_names.TEXT_FEATURES],
        )[io_names.TEXT_FEATURES]
        want = ref if length == tokens.shape[1] else ref[:5]
        diff = max(diff, float(np.abs(got.astype(np.float64) - want).max()))
    log.info(
        "text encoder parity: max|diff| %.3g over %d prompts (atol %g)", diff, len(tokens), atol
    )
    if not diff <= atol:
        raise ExportError(
            f"text encoder PyTorch/onnxruntime parity failed: max|diff| {diff:.3g} > {atol}"
        )
    proto.producer_name, proto.producer_version = "ovss-edge", __version__
    return TextExport(
        proto, Path(open_clip.tokenizer.default_bpe()), tokens.shape[1], ref.shape[1], diff
    )


def check_against_classifier(
    export: TextExport,
    classes: tuple[str, ...],
    templates: tuple[str, ...],
    text: np.ndarray,
    limit: int = 1,
) -> float:
    """Max |difference| between the exported classifier's first ``limit`` rows and the same
    classes encoded through the new graph (ensemble as ``encode_classes``); warns when above 1e-3
    (expected only for classifiers not computed from this text tower, e.g. ``--text-embeddings``).
    """
    names = classes[:limit]
    tok = ClipTokenizer(export.vocab_path, export.context_length)
    feats = ort_outputs(
        export.model.SerializeToString(),
        {io_names.TEXT_TOKENS: tok(prompts(names, templates))},
        [io_names.TEXT_FEATURES],
    )[io_names.TEXT_FEATURES]
    diff = float(np.abs(prompt_ensemble(feats, len(names)) - text[: len(names)]).max())
    if diff > 1e-3:
        log.warning(
            "the text encoder does not reproduce the exported classifier (max|diff| %.3g): "
            "vocabularies set on the device will differ from re-exported ones",
            diff,
        )
    return diff


def write_text_encoder(
    folder: str | Path, export: TextExport, templates: tuple[str, ...]
) -> TextEncoderInfo:
    """Write ``text_encoder.onnx`` and the BPE vocabulary into ``folder`` atomically.

    Returns:
        The manifest entry (file names, sha256s, context length, width, templates).
    """
    folder = Path(folder)
    graph = atomic_write(folder / TEXT_ENCODER_FILE, lambda tmp: onnx.save(export.model, tmp))
    vocab = atomic_write(folder / VOCAB_FILE, lambda tmp: shutil.copyfile(export.vocab_path, tmp))
    return TextEncoderInfo(
        file=TEXT_ENCODER_FILE,
        sha256=sha256_file(graph),
        vocab_file=VOCAB_FILE,
        vocab_sha256=sha256_file(vocab),
        context_length=export.context_length,
        embed_dim=export.embed_dim,
        templates=tuple(templates),
    )
