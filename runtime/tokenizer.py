"""Torch-free CLIP BPE tokenizer: the same token ids as open_clip's ``SimpleTokenizer``.

Reproduces what ``open_clip.get_tokenizer('ViT-B-16')`` does, step by step:

1. clean: ``ftfy.fix_text``, HTML-unescape twice, strip; collapse whitespace runs to one space;
   lower-case;
2. split with CLIP's regex (the two special tokens, ``'s 't 're 've 'm 'll 'd``, letter runs,
   single digits, runs of other non-space characters), case-insensitive;
3. map each piece's UTF-8 bytes to printable characters and apply the BPE merges (lowest rank
   first, the last symbol carrying ``</w>``);
4. wrap in ``<start_of_text>`` ... ``<end_of_text>``, zero-pad to the context length; a longer
   sequence is cut to the context length and its last id replaced by ``<end_of_text>``.

Needs the ``text`` extra (``regex``, ``ftfy``), imported lazily; see ``require_text``.
"""

from __future__ import annotations

import gzip
import html
import zlib
from collections.abc import Iterable
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from runtime.errors import ConfigError, ModelFolderError

TEXT_AVAILABLE = find_spec("regex") is not None and find_spec("ftfy") is not None
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"  # the name open_clip ships it under
CONTEXT_LENGTH = 77
MAX_CONTEXT_LENGTH = 1024  # tokens per row: bounds the [N, L] arrays a caller can ask for
NUM_MERGES = 49152 - 256 - 2  # CLIP uses the first 48894 merges: a 49408-token vocabulary
SOT, EOT = "<start_of_text>", "<end_of_text>"
_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def require_text():
    """Import (regex, ftfy) or raise an ImportError that names the extra to install."""
    if not TEXT_AVAILABLE:
        raise ImportError("the CLIP tokenizer needs regex and ftfy: pip install 'ovss-edge[text]'")
    import ftfy
    import regex

    return regex, ftfy


@lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """CLIP's reversible map from the 256 byte values to printable unicode characters.

    Printable Latin-1 bytes map to themselves; the other 68 take code points 256, 257, ...
    in byte order, so BPE never sees whitespace or control characters. The dict's order (the
    188 printable bytes, then the 68 others) is the order of the first 256 token ids.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table  # insertion order (printable bytes first) is the vocabulary's id order


def load_merges(path: str | Path) -> list[tuple[str, str]]:
    """The first ``NUM_MERGES`` BPE merges of a gzipped CLIP merges file (header line skipped).

    Raises:
        ModelFolderError: the file is missing, not gzip/UTF-8, too short, or has malformed lines.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"BPE vocabulary file {str(path)!r} is missing")
    try:
        with gzip.open(path, "rb") as f:
            lines = f.read().decode("utf-8").split("\n")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise ModelFolderError(
            f"cannot read BPE vocabulary {str(path)!r} (not a gzipped CLIP merges file?): {e}"
        ) from e
    body = lines[1 : NUM_MERGES + 1]
    if len(body) < NUM_MERGES:
        raise ModelFolderError(
            f"BPE vocabulary {str(path)!r} has {len(body)} merges, CLIP needs "
            f"{NUM_MERGES}: truncated or not CLIP's file"
        )
    merges = [tuple(line.split()) for line in body]
    bad = [i + 2 for i, m in enumerate(merges) if len(m) != 2]
    if bad:
        raise ModelFolderError(
            f"BPE vocabulary {str(path)!r} has malformed merge lines, e.g. line {bad[0]}"
        )
    return merges


def clean(text: str) -> str:
    """open_clip's ``'lower'`` cleaning: fix mojibake, unescape HTML twice, single spaces, lower."""
    _, ftfy = require_text()
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """CLIP's byte-level BPE tokenizer, without torch.

    Args:
        vocab_path: gzipped merges file (``bpe_simple_vocab_16e6.txt.gz``).
        context_length: tokens per row (77 for CLIP).
    Raises:
        ModelFolderError: missing or corrupt vocabulary file.
        ImportError: the ``text`` extra (regex, ftfy) is not installed.
    """

    def __init__(self, vocab_path: str | Path, context_length: int = CONTEXT_LENGTH):
        regex, _ = require_text()
        context_length = check_context_length(context_length)
        merges = load_merges(vocab_path)
        units = list(byte_to_unicode().values())
        vocab = units + [u + "</w>" for u in units] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.ranks: dict[tuple[str, str], int] = {m: i for i, m in enumerate(merges)}
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self.context_length = context_length
        self._pattern = regex.compile(f"{SOT}|{EOT}|{_SPLIT}", regex.IGNORECASE)
        self._cache: dict[str, tuple[int, ...]] = {SOT: (self.sot_id,), EOT: (self.eot_id,)}

    @property
    def vocab_size(self) -> int:
        """Number of token ids (49408 for CLIP)."""
        return len(self.encoder)

    def _bpe(self, piece: str) -> list[str]:
        """Merge the symbols of one byte-mapped piece, lowest-ranked pair first."""
        word = [*piece[:-1], piece[-1] + "</w>"]
        while len(word) > 1:
            rank, pair = min((self.ranks.get(p, NUM_MERGES), p) for p in zip(word, word[1:]))
            if rank == NUM_MERGES:
                break
            word = _merge(word, pair)
        return word

    def _piece_ids(self, piece: str) -> tuple[int, ...]:
        ids = self._cache.get(piece)
        if ids is None:
            units = byte_to_unicode()
            mapped = "".join(units[b] for b in piece.encode("utf-8"))
            ids = tuple(self.encoder[s] for s in self._bpe(mapped))
            self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, without start/end tokens and without truncation."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return [i for piece in self._pattern.findall(clean(text)) for i in self._piece_ids(piece)]

    def __call__(self, texts: str | Iterable[str], context_length: int | None = None) -> np.ndarray:
        """Tokenize texts into fixed-length rows.

        Args:
            texts: one string or a sequence of N strings.
            context_length: row length L (default: the tokenizer's, 77).
        Returns:
            np.ndarray: int64 [N, L]; start id 49406, the text's ids, end id 49407, zeros after.
            Texts longer than L - 2 tokens are cut and still end with the end id.
        Raises:
            TypeError: ``texts`` is not a str or a sequence of str.
        """
        texts = _as_list(texts)
        length = self.context_length if context_length is None else context_length
        length = check_context_length(length)
        out = np.zeros((len(texts), length), dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text), self.eot_id]
            if len(ids) > length:
                ids = ids[: length - 1] + [self.eot_id]
            out[row, : len(ids)] = ids
        return out


def check_context_length(length: object) -> int:
    """``length`` if it is an integer in [2, ``MAX_CONTEXT_LENGTH``] (start + end tokens fit).

    Raises:
        ConfigError: a bool, a float, or out of range.
    """
    if not isinstance(length, int) or isinstance(length, bool):
        raise ConfigError(f"context_length must be an integer, got {length!r}")
    if not 2 <= length <= MAX_CONTEXT_LENGTH:
        raise ConfigError(
            f"context_length must be in [2, {MAX_CONTEXT_LENGTH}] (start + end), got {length}"
        )
    return length


def _merge(word: list[str], pair: tuple[str, str]) -> list[str]:
    """Replace every non-overlapping occurrence of ``pair`` in ``word``, scanning left to right."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(word[i] + word[i + 1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _as_list(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts must all be str; item {bad[0]} is {type(texts[bad[0]]).__name__}")
    return texts
