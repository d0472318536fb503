"""Thread safety of ``Segmenter``: ``set_vocabulary`` / ``set_classes`` from another thread while
frames are segmented, and ``__call__`` from several threads, never raise and never give a result
whose classes do not match its labels, logits, scores and ``classes_present``.

Vocabularies fed with ``set_vocabulary`` are one-hot rows on disjoint dimensions, so two of them
give different logits and a result that mixed them cannot equal either reference. References are
computed one call at a time first; concurrent results must equal the reference of their classes.
The deterministic tests switch the vocabulary from inside the backend call (a proxy backend), the
worst moment; the stress tests run real threads.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import export_folder
from method_contract import smooth_image

from runtime import io_names, label_kernel
from runtime import segmenter as segmenter_mod
from runtime.segmenter import Segmenter

pytestmark = pytest.mark.usefixtures("one_thread")
WHOLE, SLIDE = (224, 224), (300, 260)  # one run; four windows of the 224 input


@pytest.fixture(scope="module")
def te_folder(tmp_path_factory) -> Path:
    """MaskCLIP, vocabulary as input, with the on-device text encoder."""
    return export_folder(tmp_path_factory, "ts_text", vocab_mode="input", text_encoder=True)


@pytest.fixture(scope="module")
def graph_folder(tmp_path_factory) -> Path:
    """MaskCLIP at 64 px, vocabulary as input, labels and scores computed in the graph."""
    return export_folder(
        tmp_path_factory, "ts_graph", vocab_mode="input", postprocess="graph", image_size=64
    )


@pytest.fixture(scope="module")
def zeg_folder(tmp_path_factory) -> Path:
    """ZegCLIP at 64 px, vocabulary as input, seen bias 0.1: flush slides use mask logits and
    the vocabulary's seen bias per window (``_sigmoid_upsample``)."""
    from export.builders import build_zegclip
    from export.config import ExportCfg

    out = tmp_path_factory.mktemp("ts_zeg")
    rows = np.random.default_rng(11).standard_normal((4, 64)).astype(np.float32)
    np.save(out / "rows.npy", rows / np.linalg.norm(rows, axis=1, keepdims=True))
    cfg = ExportCfg.create(
        method="zegclip",
        backbone="ovss-tiny-vit",
        classes="cat,dog,car,tree",
        image_size=64,
        seen="cat,dog",
        text_embeddings=str(out / "rows.npy"),
        vocab_mode="input",
        output=str(out / "model"),
    )
    build_zegclip(cfg)
    return out / "model"


def one_hot_vocabularies(dim: int, sizes=(2, 3, 3, 4, 5, 6, 7)) -> list[tuple[tuple, np.ndarray]]:
    """(names, [C, dim] one-hot rows) per size, on disjoint dimensions, names unique."""
    vocabs, first = [], 0
    for i, size in enumerate(sizes):
        rows = np.zeros((size, dim), np.float32)
        rows[np.arange(size), first + np.arange(size)] = 1.0
        vocabs.append((tuple(f"v{i}c{k}" for k in range(size)), rows))
        first += size
    assert first <= dim
    return vocabs


TEXT_VOCABS = [("sky", "road"), ("car", "tree", "bus", "person"), ("cat", "dog", "wall")]


def text_dim(seg: Segmenter) -> int:
    return seg.manifest.input(io_names.TEXT_EMBEDDINGS).shape[-1]


class Proxy:
    """A backend stand-in around the real one: records each run's text input, runs ``hook``
    once inside the next run (the worst moment for a vocabulary change), and can check that no
    two runs overlap (``sleep`` widens each run)."""

    def __init__(self, inner, name: str | None = None, sleep: float = 0.0):
        self.inner, self.name, self.providers = inner, name or inner.name, inner.providers
        self.input_names, self.output_names = inner.input_names, inner.output_names
        self.texts, self.hook, self.sleep = [], None, sleep
        self.active, self.max_active, self._count = 0, 0, threading.Lock()

    def __call__(self, feeds, outputs):
        with self._count:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            self.texts.append(feeds.get(io_names.TEXT_EMBEDDINGS))
            hook, self.hook = self.hook, None
            if hook is not None:
                hook()
            if self.sleep:
                time.sleep(self.sleep)
            return self.inner(feeds, outputs)
        finally:
            with self._count:
                self.active -= 1

    def close(self):
        self.inner.close()


def check(result, refs: dict) -> None:
    """``result`` is whole and equals the reference of its classes."""
    assert result.classes in refs, result.classes
    ref, n = refs[result.classes], len(result.classes)
    assert result.logits.shape[0] == n and int(result.labels.max()) < n
    assert set(result.classes_present) <= set(result.classes)
    assert result.classes_present == ref.classes_present
    np.testing.assert_array_equal(result.labels, ref.labels)
    np.testing.assert_allclose(result.logits, ref.logits, rtol=1e-5, atol=1e-5)
    if ref.scores is not None:
        assert result.scores.shape == result.labels.shape
        np.testing.assert_allclose(result.scores, ref.scores, rtol=1e-5, atol=1e-6)


def references(seg: Segmenter, images, vocabs=(), text_vocabs=()) -> dict:
    """{(classes, image index): result}, one call at a time."""
    refs = {}
    for names, rows in vocabs:
        seg.set_vocabulary(names, rows)
        for i, image in enumerate(images):
            refs[names, i] = seg(image, scores=True)
    for names in text_vocabs:
        seg.set_classes(names)
        for i, image in enumerate(images):
            refs[names, i] = seg(image, scores=True)
    return refs


def of_image(refs: dict, i: int) -> dict:
    return {names: r for (names, j), r in refs.items() if j == i}


# ---------------------------------------------------------------- a switch inside a call


@pytest.mark.parametrize("hw", [WHOLE, SLIDE], ids=["whole", "slide"])
def test_a_vocabulary_switch_inside_a_call_lands_on_the_next_call(te_folder, hw):
    """``set_vocabulary`` runs inside the first backend run of a call: that call is wholly the
    old vocabulary (every window fed the old rows), the next wholly the new one."""
    with Segmenter(te_folder, backend="onnxruntime") as seg:
        (a, rows_a), (b, rows_b), (c, rows_c) = one_hot_vocabularies(text_dim(seg))[1:4]
        image = smooth_image(hw, seed=1)
        refs = of_image(references(seg, [image], [(a, rows_a), (b, rows_b), (c, rows_c)]), 0)
        seg.set_vocabulary(a, rows_a)
        seg.backend = proxy = Proxy(seg.backend)
        for new, new_rows, old_rows in ((b, rows_b, rows_a), (c, rows_c, rows_b)):
            proxy.hook = lambda n=new, r=new_rows: seg.set_vocabulary(n, r)
            proxy.texts = []
            got = seg(image, scores=True)
            assert got.classes == refs[got.classes].classes != new  # the old vocabulary
            check(got, refs)
            assert len(proxy.texts) == got.windows >= 1
            assert all(np.array_equal(t, old_rows) for t in proxy.texts)
            assert seg.classes == new
        assert seg(image).classes == c


def test_set_classes_inside_a_call_lands_on_the_next_call(te_folder):
    with Segmenter(te_folder, backend="onnxruntime") as seg:
        image = smooth_image(SLIDE, seed=2)
        refs = of_image(references(seg, [image], text_vocabs=TEXT_VOCABS[:2]), 0)
        seg.set_classes(TEXT_VOCABS[0])
        seg.backend = proxy = Proxy(seg.backend)
        proxy.hook = lambda: seg.set_classes(TEXT_VOCABS[1])
        got = seg(image, scores=True)
        assert got.classes == TEXT_VOCABS[0] and got.windows == 4
        check(got, refs)
        assert all(np.array_equal(t, proxy.texts[0]) for t in proxy.texts)
        check(seg(image, scores=True), refs)
        assert seg.classes == TEXT_VOCABS[1]


def test_a_switch_inside_a_flush_slide_keeps_the_call_seen_bias(zeg_folder):
    """ZegCLIP flush slides subtract the vocabulary's seen bias from every window's upsampled
    sigmoid: a switch (other rows, other seen classes) mid-call must not reach those windows."""
    with Segmenter(zeg_folder, backend="onnxruntime") as seg:
        rows = np.load(zeg_folder / seg.manifest.text_embeddings_file)
        names = seg.manifest.classes
        image = smooth_image((100, 90), seed=3)
        vocab = {
            "seen2": (names, rows, ["cat", "dog"]),
            "seen1": (names[::-1], rows[::-1].copy(), ["tree"]),
        }
        refs = {}
        for classes, emb, seen in vocab.values():
            seg.set_vocabulary(classes, emb, seen=seen)
            refs[classes] = seg(image, scores=True)
        assert refs[names].windows > 1 and seg.slide_edge == "flush"
        seg.set_vocabulary(*vocab["seen2"][:2], seen=vocab["seen2"][2])
        seg.backend = proxy = Proxy(seg.backend)
        classes, emb, seen = vocab["seen1"]
        proxy.hook = lambda: seg.set_vocabulary(classes, emb, seen=seen)
        got = seg(image, scores=True)
        assert got.classes == names
        check(got, refs)
        assert seg.seen_classes == ("tree",)
        check(seg(image, scores=True), refs)


def test_in_graph_labels_take_the_calls_class_count(graph_folder):
    """The graph's labels of a 2-class call stay uint8 (<= 255 classes) even when a 300-class
    vocabulary lands during the call."""
    with Segmenter(graph_folder, backend="onnxruntime") as seg:
        dim = text_dim(seg)
        two = (("a", "b"), np.eye(2, dim, dtype=np.float32))
        many = tuple(f"k{i}" for i in range(300))
        many_rows = np.random.default_rng(0).standard_normal((300, dim)).astype(np.float32)
        image = smooth_image((64, 64), seed=4)
        seg.set_vocabulary(*two)
        ref = seg(image)
        assert ref.postprocess == "graph" and ref.labels.dtype == np.uint8
        seg.backend = proxy = Proxy(seg.backend)
        proxy.hook = lambda: seg.set_vocabulary(many, many_rows)
        got = seg(image)
        assert got.classes == ("a", "b") and got.labels.dtype == np.uint8
        np.testing.assert_array_equal(got.labels, ref.labels)
        assert got.classes_present == ref.classes_present
        assert seg(image).labels.dtype == np.int32  # the 300 classes, from the next call


# ---------------------------------------------------------------- real threads


def test_vocabulary_changes_from_another_thread_during_inference(te_folder):
    """One thread segments frames (whole and slide) while another cycles through vocabularies
    of 2..7 classes (``set_vocabulary``) and text-encoded ones (``set_classes``)."""
    with Segmenter(te_folder, backend="onnxruntime") as seg:
        vocabs = one_hot_vocabularies(text_dim(seg))
        images = [smooth_image(WHOLE, seed=5), smooth_image(SLIDE, seed=6)]
        refs = references(seg, images, vocabs, TEXT_VOCABS)
        stop, errors, results = threading.Event(), [], []

        def flip():
            i = 0
            while not stop.is_set():
                try:
                    if i % 3 == 2:
                        seg.set_classes(TEXT_VOCABS[i % len(TEXT_VOCABS)])
                    else:
                        seg.set_vocabulary(*vocabs[i % len(vocabs)])
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    errors.append(e)
                i += 1
                time.sleep(0.0005)

        t = threading.Thread(target=flip)
        t.start()
        try:
            for k in range(60):
                i = k % 2
                results.append((i, seg(images[i], scores=True)))
        finally:
            stop.set()
            t.join()
    assert not errors, errors[:3]
    for i, result in results:
        check(result, of_image(refs, i))
    assert len({r.classes for _, r in results}) >= 4  # it did change under the frames


def test_two_threads_segment_concurrently(te_folder):
    """``__call__`` from two threads at once (onnxruntime runs them concurrently) while a third
    changes the vocabulary: every result equals its single-threaded reference."""
    with Segmenter(te_folder, backend="onnxruntime") as seg:
        vocabs = one_hot_vocabularies(text_dim(seg))[:3]
        images = [smooth_image(WHOLE, seed=7), smooth_image(SLIDE, seed=8)]
        refs = references(seg, images, vocabs)
        results, errors, stop = [], [], threading.Event()
        start = threading.Barrier(3)

        def segment(i: int):
            start.wait()
            try:
                for _ in range(20):
                    results.append((i, seg(images[i], scores=True)))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        def flip():
            start.wait()
            k = 0
            while not stop.is_set():
                seg.set_vocabulary(*vocabs[k % len(vocabs)])
                k += 1
                time.sleep(0.001)

        workers = [threading.Thread(target=segment, args=(i,)) for i in (0, 1)]
        flipper = threading.Thread(target=flip)
        for w in [*workers, flipper]:
            w.start()
        for w in workers:
            w.join()
        stop.set()
        flipper.join()
    assert not errors, errors[:3]
    assert len(results) == 40
    for i, result in results:
        check(result, of_image(refs, i))


def test_a_backend_that_is_not_thread_safe_runs_one_call_at_a_time(te_folder):
    """TensorRT's backend has one stream and shared buffers: the Segmenter serialises its runs
    (a proxy named "tensorrt" that sleeps in each run would see two at once otherwise)."""
    with Segmenter(te_folder, backend="onnxruntime") as seg:
        image = smooth_image(SLIDE, seed=9)
        refs = of_image(references(seg, [image], one_hot_vocabularies(text_dim(seg))[:1]), 0)
        seg.backend = proxy = Proxy(seg.backend, name="tensorrt", sleep=0.003)
        results, start = [], threading.Barrier(3)

        def segment():
            start.wait()
            for _ in range(4):
                results.append(seg(image, scores=True))

        threads = [threading.Thread(target=segment) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(results) == 12 and proxy.max_active == 1
    for result in results:
        check(result, refs)


def test_first_set_classes_from_two_threads_loads_one_text_encoder(te_folder, monkeypatch):
    made, real = [], segmenter_mod.TextEncoder

    def counting(*args, **kw):
        time.sleep(0.05)  # a slow load: the second caller arrives while the first loads
        made.append(real(*args, **kw))
        return made[-1]

    monkeypatch.setattr(segmenter_mod, "TextEncoder", counting)
    with Segmenter(te_folder, backend="onnxruntime") as seg:
        start, errors = threading.Barrier(2), []

        def set_classes(names):
            start.wait()
            try:
                seg.set_classes(names)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=set_classes, args=(n,)) for n in TEXT_VOCABS[:2]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(made) == 1
        assert seg.classes in TEXT_VOCABS[:2]


def test_label_kernel_pool_is_made_once_under_concurrent_first_use(monkeypatch):
    """Threads that start the label kernel's worker pool at once share one pool (a slow
    constructor would let several be made otherwise)."""
    made, real = [], label_kernel.ThreadPoolExecutor

    def slow_pool(*args, **kw):
        time.sleep(0.05)
        made.append(real(*args, **kw))
        return made[-1]

    monkeypatch.setattr(label_kernel, "_executor", None)
    monkeypatch.setattr(label_kernel, "ThreadPoolExecutor", slow_pool)
    start, got = threading.Barrier(4), []

    def first_use():
        start.wait()
        got.append(label_kernel._pool())

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(made) == 1 and all(p is made[0] for p in got)
    finally:
        for pool in made:
            pool.shutdown()
