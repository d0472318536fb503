"""training.data: layouts, label mapping, zero-shot splits, seeded mmseg augmentation, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runtime.errors import DatasetError
from training.class_names import CAMVID, COCO_STUFF, CONTEXT, VOC
from training.data import DataCfg, Sample, build_dataset, resolve_split
from training.data.transforms import eval_size, photometric_distortion, random_crop, rescale_size

SMALL = dict(crop_size=32, img_scale=(128, 32), ratio_range=(0.5, 2.0))
PALETTE = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10]], np.uint8)


def _image(path: Path, h: int, w: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _mask(path: Path, values: np.ndarray, palette: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(values.astype(np.uint8))
    if palette:
        img.putpalette([v for i in range(256) for v in (i, i, i)])  # VOC masks are mode P
    img.save(path)


def _blocks(h: int, w: int, values) -> np.ndarray:
    """A label map of vertical stripes, one per value."""
    return np.asarray(values, np.uint8)[np.arange(w) * len(values) // w][None].repeat(h, 0)


def _voc(root: Path, train=("a", "b"), val=("c",), aug=None, size=(30, 40)) -> Path:
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for i, ident in enumerate(sorted(set(train) | set(val) | set(aug or ()))):
        _image(root / "JPEGImages" / f"{ident}.jpg", *size, seed=i)
        if ident in train or ident in val:
            _mask(root / "SegmentationClass" / f"{ident}.png", _blocks(*size, [0, 1, 20, 255]))
        if aug is not None:
            _mask(root / "SegmentationClassAug" / f"{ident}.png", np.full(size, 2))
    (sets / "train.txt").write_text("\n".join(train) + "\n")
    (sets / "val.txt").write_text("\n".join(val) + "\n")
    if aug is not None:
        (sets / "aug.txt").write_text("\n".join(aug) + "\n")
    return root


def _folder(
    root: Path, stems=("x", "y"), ext=".png", size=(30, 40), values=(0, 1, 2, 3)
) -> DataCfg:
    for i, stem in enumerate(stems):
        _image(root / "img" / f"{stem}{ext}", *size, seed=i)
        _mask(root / "ann" / f"{stem}.png", _blocks(*size, values), palette=False)
    return DataCfg(
        "folder",
        images=str(root / "img"),
        masks=str(root / "ann"),
        classes=("a", "b", "c"),
        ignore_label=3,
        **SMALL,
    )


# ---------------------------------------------------------------- layouts and label mapping


def test_voc_pairs_and_reduce_zero_label(tmp_path):
    cfg = DataCfg("voc", root=str(_voc(tmp_path)))
    ds = build_dataset(cfg, "train", train=True)
    assert len(ds) == 2 and ds.classes == VOC
    assert [Path(ds.image_path(i)).name for i in range(2)] == ["a.jpg", "b.jpg"]
    assert Path(ds.label_path(0)).parent.name == "SegmentationClass"
    label = ds[0].label
    assert label.dtype == torch.int64 and label.shape == (30, 40)
    assert [int(label[0, c]) for c in (0, 10, 20, 30)] == [255, 0, 19, 255]  # 0 bg, 1, 20, 255
    assert ds.unseen == (15, 16, 17, 18, 19) and ds.seen == tuple(range(15))
    assert [VOC[i] for i in ds.unseen] == ["potted plant", "sheep", "sofa", "train", "tv monitor"]
    assert len(build_dataset(cfg, "val", train=False)) == 1


def test_voc_aug_concatenated_like_mmseg(tmp_path):
    cfg = DataCfg("voc", root=str(_voc(tmp_path, aug=("b", "d"))))
    ds = build_dataset(cfg, "train", train=True)
    assert [Path(p.image).stem for p in ds.pairs] == ["a", "b", "b", "d"]
    assert [Path(p.mask).parent.name for p in ds.pairs] == [
        "SegmentationClass",
        "SegmentationClass",
        "SegmentationClassAug",
        "SegmentationClassAug",
    ]
    assert ds[2].label.unique().tolist() == [1]  # aug mask: raw 2 -> class 1
    assert len(build_dataset(cfg, "train", train=False)) == 2  # the plain train list


def test_coco_stuff_layout(tmp_path):
    for split, stems in (("train2017", ("1", "2")), ("val2017", ("3",))):
        for stem in stems:
            _image(tmp_path / "images" / split / f"{stem}.jpg", 20, 24)
            _mask(
                tmp_path / "annotations" / split / f"{stem}_labelTrainIds.png",
                _blocks(20, 24, [0, 170, 255]),
                palette=False,
            )
    cfg = DataCfg("coco_stuff", root=str(tmp_path))
    ds = build_dataset(cfg, "train", train=True)
    assert len(ds) == 2 and len(ds.classes) == 171 and ds.classes == COCO_STUFF
    assert ds[1].label.unique().tolist() == [0, 170, 255]
    assert len(ds.unseen) == 15 and 19 in ds.unseen and len(ds.seen) == 156
    assert len(build_dataset(cfg, "val", train=False)) == 1


@pytest.mark.parametrize("name,first", [("context60", [0, 1, 59]), ("context59", [255, 0, 58])])
def test_context_layouts(tmp_path, name, first):
    sets = tmp_path / "ImageSets" / "SegmentationContext"
    sets.mkdir(parents=True)
    _image(tmp_path / "JPEGImages" / "2008_1.jpg", 20, 30)
    _mask(tmp_path / "SegmentationClassContext" / "2008_1.png", _blocks(20, 30, [0, 1, 59]))
    (sets / "train.txt").write_text("2008_1\n")
    ds = build_dataset(DataCfg(name, root=str(tmp_path)), "train", train=True)
    assert [int(ds[0].label[0, c]) for c in (0, 10, 20)] == first
    assert len(ds.classes) == int(name[-2:])
    names = sorted(ds.classes[i] for i in ds.unseen)
    assert names == sorted(
        [
            "cow",
            "motorbike",
            "sofa",
            "cat",
            "boat",
            "fence",
            "bird",
            "tv monitor",
            "keyboard",
            "airplane",
        ]
    )
    assert ds.classes[-59:] == CONTEXT


def test_folder_pairs_by_stem_and_maps_ignore(tmp_path):
    cfg = _folder(tmp_path, stems=("b", "a"), ext=".jpg")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    ds = build_dataset(cfg, "anything", train=False)
    assert [Path(p.image).name for p in ds.pairs] == ["a.jpg", "b.jpg"]
    assert ds[0].label.unique().tolist() == [0, 1, 2, 255]  # raw 3 = ignore_label -> 255
    assert ds.unseen == () and ds.seen == (0, 1, 2)
    cfg = DataCfg("folder", images="i", masks="m", classes=("a", "B"), unseen=("b",))
    split = resolve_split(cfg)
    assert split.seen == (0,) and split.unseen == (1,)


# ---------------------------------------------------------------- pipelines


def test_eval_resizes_image_and_keeps_label_size(tmp_path):
    ds = build_dataset(DataCfg("voc", root=str(_voc(tmp_path))), "val", train=False)
    s = ds[0]
    assert isinstance(s, Sample) and s.index == 0 and s.image.dtype == torch.float32
    assert s.image.shape == (3, 512, 683)  # min(2048/40, 512/30) = 17.07 -> 30x40 becomes 512x683
    assert s.label.shape == (30, 40)
    assert rescale_size(375, 500, (2048, 512)) == (512, 683)
    assert rescale_size(100, 4000, (2048, 512)) == (51, 2048)
    # The official test resize sets the short side to 512 exactly, with no 2048 cap (min_size).
    assert eval_size(375, 500, 512) == (512, 683)
    assert eval_size(100, 4000, 512) == (512, 20480)
    assert ds[-1].index == 0
    with pytest.raises(IndexError):
        ds[1]


def test_train_sample_crop_and_padding(tmp_path):
    ds = build_dataset(DataCfg("voc", root=str(_voc(tmp_path))), "train", train=True)
    s = ds[(0, 3)]
    assert s.image.shape == (3, 512, 512) and s.label.shape == (512, 512)
    assert s.image.dtype == torch.float32 and s.label.dtype == torch.int64
    small = build_dataset(
        DataCfg(
            "voc", root=str(tmp_path), crop_size=64, img_scale=(40, 30), ratio_range=(1.0, 1.0)
        ),
        "train",
        train=True,
    )
    s = small[(1, 0)]  # 30x40 stays 30x40, padded to 64x64
    assert s.image.shape == (3, 64, 64) and s.index == 1
    assert (s.label[30:] == 255).all() and (s.label[:, 40:] == 255).all()
    assert (s.image[:, 30:] == 0).all() and (s.image[:, :, 40:] == 0).all()


def test_train_is_deterministic_per_seed(tmp_path):
    ds = build_dataset(_folder(tmp_path), "", train=True)
    a, b, c = ds[(0, 7)], ds[(0, 7)], ds[(0, 8)]
    assert torch.equal(a.image, b.image) and torch.equal(a.label, b.label)
    assert not torch.equal(a.image, c.image)
    batch = torch.utils.data.default_collate([ds[(0, 1)], ds[(1, 2)]])
    assert batch.image.shape == (2, 3, 32, 32) and batch.index.tolist() == [0, 1]


def test_flip_and_crop_keep_image_and_label_aligned(tmp_path):
    """Pixel colour encodes the label; after augmentation (no photometric) they still agree."""
    h, w = 40, 60
    label = _blocks(h, w, [0, 1, 1, 2, 0, 0, 3, 3, 3, 2])  # asymmetric: a flip of one shows
    (tmp_path / "img").mkdir()
    Image.fromarray(PALETTE[label]).save(tmp_path / "img" / "s.png")
    _mask(tmp_path / "ann" / "s.png", label, palette=False)
    cfg = DataCfg(
        "folder",
        images=str(tmp_path / "img"),
        masks=str(tmp_path / "ann"),
        classes=("r", "g", "b", "y"),
        photometric=False,
        crop_size=48,
        img_scale=(60, 40),
        ratio_range=(0.9, 1.6),
        cat_max_ratio=1.0,
    )
    ds = build_dataset(cfg, "", train=True)
    mean, std = torch.tensor(cfg.mean)[:, None, None], torch.tensor(cfg.std)[:, None, None]
    for seed in range(8):
        s = ds[(0, seed)]
        rgb = (s.image * std + mean).permute(1, 2, 0)
        nearest = (rgb[..., None, :] - torch.from_numpy(PALETTE).float()).abs().sum(-1).argmin(-1)
        lab = s.label
        inner = lab[:, 1:-1] != 255  # ignore stripe boundaries (bilinear blend) and padding
        inner &= (lab[:, 1:-1] == lab[:, :-2]) & (lab[:, 1:-1] == lab[:, 2:])
        agree = (nearest[:, 1:-1] == lab[:, 1:-1])[inner].float().mean()
        assert agree == 1.0, f"seed {seed}: image and label disagree on {1 - agree:.1%}"


def test_cat_max_ratio_rejects_dominated_crops():
    label = np.zeros((100, 100), np.uint8)
    label[:50, :50] = 1
    image = np.zeros((100, 100, 3), np.uint8)

    def balanced(ratio):
        ok = 0
        for seed in range(40):
            crop = random_crop(np.random.default_rng(seed), image, label, 40, ratio).label
            assert crop.shape == (40, 40)
            counts = np.bincount(crop.ravel(), minlength=2)
            ok += counts.max() / counts.sum() < 0.75
        return ok

    assert balanced(0.75) >= 36 and balanced(1.0) <= 20
    ignore = np.full((100, 100), 255, np.uint8)  # no class at all: 10 retries, then any crop
    assert random_crop(np.random.default_rng(0), image, ignore, 40, 0.75).label.shape == (40, 40)


def test_photometric_distortion_seeded():
    img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    outs = [photometric_distortion(np.random.default_rng(s), img) for s in (1, 1, 2, 3, 4)]
    assert all(o.dtype == np.uint8 and o.shape == img.shape for o in outs)
    assert np.array_equal(outs[0], outs[1])
    assert any(not np.array_equal(o, img) for o in outs)


def test_unknown_dataset_name():
    with pytest.raises(DatasetError, match="unknown dataset 'ade'.*voc"):
        DataCfg("ade", root="x")


def test_unrecognised_layout_says_expected_and_found(tmp_path):
    _voc(tmp_path / "VOC2012")
    with pytest.raises(DatasetError, match=r"expected dirs JPEGImages.*found VOC2012/.*did you"):
        build_dataset(DataCfg("voc", root=str(tmp_path)), "train", train=True)
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset(DataCfg("coco_stuff", root=str(tmp_path / "nope")), "val", train=False)
    with pytest.raises(DatasetError, match="test.txt does not exist; splits there: train, val"):
        build_dataset(DataCfg("voc", root=str(tmp_path / "VOC2012")), "test", train=False)


def test_empty_datasets(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "ann").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        build_dataset(
            DataCfg(
                "folder", images=str(tmp_path / "img"), masks=str(tmp_path / "ann"), classes=("a",)
            ),
            "",
            train=False,
        )
    root = _voc(tmp_path / "voc", val=())
    with pytest.raises(DatasetError, match="val.txt lists no ids"):
        build_dataset(DataCfg("voc", root=str(root)), "val", train=False)


def test_unpaired_folder_lists_files(tmp_path):
    cfg = _folder(tmp_path, stems=("a", "b"))
    (tmp_path / "ann" / "b.png").rename(tmp_path / "ann" / "zz.png")
    msg = r"1 images have no <stem>.png.*: b;.*1 masks have no image.*zz"
    with pytest.raises(DatasetError, match=msg):
        build_dataset(cfg, "", train=False)


def test_mask_size_mismatch_at_construction_and_on_load(tmp_path):
    cfg = _folder(tmp_path)
    _mask(tmp_path / "ann" / "y.png", np.zeros((30, 41)), palette=False)
    msg = r"y.png: mask size \(41, 30\) differs .*y.png \(40, 30\)"
    with pytest.raises(DatasetError, match=msg):
        build_dataset(cfg, "", train=False)
    _mask(tmp_path / "ann" / "y.png", np.zeros((30, 40)), palette=False)
    ds = build_dataset(cfg, "", train=False)
    _mask(tmp_path / "ann" / "y.png", np.zeros((31, 40)), palette=False)
    with pytest.raises(DatasetError, match="differs from its image"):
        ds[1]
    with pytest.raises(DatasetError, match="1 of 2 masks are bad"):
        ds.validate()
    Image.new("RGB", (40, 30)).save(tmp_path / "ann" / "x.png")
    with pytest.raises(DatasetError, match="mode RGB"):
        build_dataset(cfg, "", train=False)


def test_labels_outside_class_range(tmp_path):
    root = _voc(tmp_path)
    _mask(root / "SegmentationClass" / "b.png", _blocks(30, 40, [0, 21, 22]))
    ds = build_dataset(DataCfg("voc", root=str(root)), "train", train=True)
    ds[0]
    msg = r"b.png: label values 20, 21 after reduce_zero_label \(stored as 21, 22\).*20 classes"
    with pytest.raises(DatasetError, match=msg):
        ds[1]
    with pytest.raises(DatasetError, match=msg):
        ds[(1, 0)]
    with pytest.raises(DatasetError, match="1 of 2 masks are bad"):
        ds.validate()
    build_dataset(DataCfg("voc", root=str(root)), "val", train=False).validate()


def test_unseen_names_validated():
    cfg = DataCfg("voc", root="unused", unseen=("sheep", "sofaa", "tvmonitor"))
    msg = r"'sofaa' \(did you mean 'sofa'\?\).*'tvmonitor'.*valid names"
    with pytest.raises(DatasetError, match=msg):
        resolve_split(cfg)
    split = resolve_split(DataCfg("voc", root="x", unseen=("Sheep", " cat")))
    assert split.unseen == (7, 16) and len(split.seen) == 18
    assert resolve_split(DataCfg("voc", root="x", unseen=())).unseen == ()


def test_folder_class_errors():
    with pytest.raises(DatasetError, match="needs classes"):
        resolve_split(DataCfg("folder", images="i", masks="m"))
    with pytest.raises(DatasetError, match="duplicate class names"):
        resolve_split(DataCfg("folder", images="i", masks="m", classes=("car", "Car ")))
    with pytest.raises(DatasetError, match="also a class index"):
        resolve_split(DataCfg("folder", images="i", masks="m", classes=("a", "b"), ignore_label=1))
    with pytest.raises(DatasetError, match="renames the 20 voc classes but has 2"):
        resolve_split(DataCfg("voc", root="x", classes=("a", "b")))
    with pytest.raises(DatasetError, match="needs both images= and masks="):
        DataCfg("folder", images="i")


# ---------------------------------------------------------------- real data


def test_camvid_as_folder_dataset(camvid):
    cfg = DataCfg(
        "folder",
        images=str(camvid / "val"),
        masks=str(camvid / "valannot"),
        classes=CAMVID,
        ignore_label=11,
    )
    ds = build_dataset(cfg, "val", train=False)
    assert len(ds) == 101 and ds.classes == CAMVID
    ds.validate()
    s = ds[0]
    assert s.image.shape == (3, 512, 683) and s.label.shape == (360, 480)
    assert set(s.label.unique().tolist()) <= set(range(11)) | {255}
    t = ds[(0, 0)]
    assert t.image.shape == (3, 512, 512) and t.label.shape == (512, 512)
