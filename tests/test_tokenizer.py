"""runtime.tokenizer: open_clip's SimpleTokenizer ids on a few hundred strings, and its errors.

The strings are generated deterministically: every built-in class name, every template with a few
names, hand-picked unicode / HTML / whitespace / punctuation cases, lengths around the 77-token
cut, and seeded random mixes of all of those character kinds.
"""

import gzip

import numpy as np
import open_clip
import pytest

from runtime import tokenizer as rt
from runtime.errors import ModelFolderError
from training.class_names import BUILTIN
from training.text_classifier import TEMPLATE_SETS

SPECIAL = [
    "",
    " ",
    "\n\t  \r\n",
    "café crème brûlée",
    "naïve façade señor Ærøskøbing",
    "東京タワー 北京 서울",
    "😀🐶🚗 emoji 👍🏽 👨‍👩‍👧",
    "Привет, мир! ёлка",
    "שלום עולם",
    "مرحبا بالعالم",
    "e\u0301\u0302 combining a\u0308",
    "Fish &amp; Chips",
    "&lt;b&gt;bold&lt;/b&gt; &quot;q&quot; &#39;s &#x263A;",
    "&amp;amp; twice-escaped",
    "a\tb\nc  d\r\ne\u00a0f\u2003g",
    "!!!???... ---- ;;;:::",
    "(((a))) [b] {c} <d>",
    "1234567890 3.14159 1e-5",
    "it's don't we're they've I'm we'll he'd",
    "IT'S DON'T WE'RE",
    "rock'n'roll o'clock ’s curly",
    "<start_of_text> inside <end_of_text>",
    "İstanbul ß straße ﬁnance Ǆ",
    "\x00\x01\x7f control",
    "tab\tseparated\tclass",
    "UPPER lower MiXeD",
    "snake_case kebab-case camelCase",
    "âˆ’ mojibake â€œquotedâ€\x9d",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "a\u200bzero\u200dwidth",
    "tv monitor",
    "potted plant",
    "the 's alone",
    "''' \"\"\" ``` ´´",
    "50% off $9.99 #1 @user",
]
# Pieces for random strings: letters, digits, punctuation, whitespace, accents, CJK, emoji,
# Cyrillic, RTL scripts, combining marks, HTML entities.
PIECES = list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789.,;:!?'\"-_()/&#@ \t\n") + [
    "é",
    "ü",
    "ñ",
    "ç",
    "中",
    "文",
    "字",
    "日本",
    "한",
    "😀",
    "🚗",
    "👍🏽",
    "ж",
    "Щ",
    "ы",
    "א",
    "ש",
    "ع",
    "ب",
    "\u0301",
    "\u0308",
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;",
    "&#39;",
    "'s",
    "'t",
    "'re",
    "  ",
    "\r\n",
]


def _generated() -> list[str]:
    names = sorted({n for names in BUILTIN.values() for n in names})
    texts = list(names)
    some = ["cat", "traffic light", "tv monitor", "Fire Hydrant"]
    texts += [t.format(n) for t in TEMPLATE_SETS["maskclip85"] for n in some[:3]]
    texts += [t.format(n) for s in ("single", "zegclip") for t in TEMPLATE_SETS[s] for n in some]
    texts += SPECIAL
    texts += ["a " * k for k in (74, 75, 76, 77, 150)]  # 75 fits exactly in 77 with start + end
    texts += [" ".join(names[:60]), "supercalifragilistic" * 20, "!" * 500, "東" * 300]
    rng = np.random.default_rng(0)
    for _ in range(150):
        texts.append("".join(rng.choice(PIECES, size=int(rng.integers(0, 40)))))
    return texts


TEXTS = _generated()


@pytest.fixture(scope="module")
def tok():
    return rt.ClipTokenizer(open_clip.tokenizer.default_bpe())


@pytest.fixture(scope="module")
def ref():
    return open_clip.get_tokenizer("ViT-B-16")


def test_corpus_is_large_and_varied():
    assert len(TEXTS) >= 300 and len(set(TEXTS)) >= 290
    assert any(len(t) > 400 for t in TEXTS) and "" in TEXTS


def test_same_ids_as_open_clip(tok, ref):
    want = ref(TEXTS).numpy()
    got = tok(TEXTS)
    assert got.dtype == np.int64 and got.shape == (len(TEXTS), 77)
    bad = [TEXTS[i] for i in np.flatnonzero((got != want).any(axis=1))]
    assert not bad, f"{len(bad)} strings differ, e.g. {bad[:3]!r}"
    assert (got[:, 0] == 49406).all() and (got == 49407).any(axis=1).all()


def test_truncation_keeps_end_token(tok, ref):
    long = ["a " * 200, "a " * 75, "a " * 76]
    got = tok(long)
    assert got[0, -1] == 49407 and got[2, -1] == 49407 and got[1, -1] == 49407
    np.testing.assert_array_equal(got, ref(long).numpy())
    short = ref(long, context_length=10).numpy()
    np.testing.assert_array_equal(tok(long, context_length=10), short)


def test_vocabulary_and_single_string(tok, ref):
    assert tok.vocab_size == 49408 == len(ref.encoder) and tok.encoder == ref.encoder
    assert (tok.sot_id, tok.eot_id) == (ref.sot_token_id, ref.eot_token_id)
    assert tok("a photo of a cat.").shape == (1, 77)
    assert tok([]).shape == (0, 77)
    assert tok.encode("a photo") == ref.encode("a photo")


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", 7], [None]])
def test_non_string_input(tok, bad):
    with pytest.raises(TypeError, match="str"):
        tok(bad)


def test_missing_and_corrupt_vocab(tmp_path):
    with pytest.raises(ModelFolderError, match="missing"):
        rt.ClipTokenizer(tmp_path / "nothing.txt.gz")
    plain = tmp_path / "plain.txt.gz"
    plain.write_bytes(b"not gzip at all")
    with pytest.raises(ModelFolderError, match="cannot read"):
        rt.ClipTokenizer(plain)
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"#version: 0.2\ni n\nt h\n"))
    with pytest.raises(ModelFolderError, match="merges"):
        rt.ClipTokenizer(short)
    lines = gzip.open(open_clip.tokenizer.default_bpe()).read().decode().split("\n")
    lines[10] = "three part line"
    bad = tmp_path / "bad.txt.gz"
    bad.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(ModelFolderError, match="malformed"):
        rt.ClipTokenizer(bad)
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(gzip.compress("\n".join(lines).encode())[:5000])
    with pytest.raises(ModelFolderError, match="cannot read"):
        rt.ClipTokenizer(cut)


def test_require_text_names_the_extra(monkeypatch):
    monkeypatch.setattr(rt, "TEXT_AVAILABLE", False)
    with pytest.raises(ImportError, match=r"ovss-edge\[text\]"):
        rt.require_text()
    with pytest.raises(ImportError, match="regex and ftfy"):
        rt.ClipTokenizer(open_clip.tokenizer.default_bpe())
