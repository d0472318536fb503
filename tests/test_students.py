"""MaskCLIP+ students: shapes, the fixed text classifier, dilation, backbone weight loading."""

from __future__ import annotations

import functools
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from safetensors.torch import save_file

from runtime.errors import CheckpointError, ConfigError, UnknownNameError
from training.students import (
    STUDENTS,
    Student,
    StudentCfg,
    build_student,
    dilate_layer,
    load_backbone_weights,
)

D, C = 32, 5
NAMES = sorted(STUDENTS)
LOGIT_STRIDE = {
    "deeplabv2_r101": 8,
    "deeplabv3plus_r101": 4,
    "deeplabv3plus_r18": 4,
    "deeplabv3plus_mbv3": 4,
}
BACKBONE = {  # name -> (low channels, high channels, default backbone stride)
    "deeplabv2_r101": (256, 2048, 8),
    "deeplabv3plus_r101": (256, 2048, 8),
    "deeplabv3plus_r18": (64, 512, 16),
    "deeplabv3plus_mbv3": (24, 960, 16),
}


@functools.cache
def _student(name: str, background: bool) -> Student:
    torch.manual_seed(0)
    return build_student(StudentCfg(name, D, background=background))


def _inputs(size=(64, 64), batch: int = 2):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, *size, generator=g), torch.randn(C, D, generator=g)


def test_registry_names():
    assert set(STUDENTS) == set(LOGIT_STRIDE)


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_output_shape(name, background):
    student = _student(name, background).eval()
    image, text = _inputs()
    s = LOGIT_STRIDE[name]
    with torch.no_grad():
        logits = student(image, text)
        feat = student.features(image)
    assert student.output_stride == s and student.num_extra == int(background)
    assert logits.shape == (2, C + int(background), 64 // s, 64 // s)
    assert feat.shape == (2, D, 64 // s, 64 // s)


@pytest.mark.parametrize("name", NAMES)
def test_size_rounds_up(name):
    student = _student(name, False).eval()
    image, _ = _inputs((50, 70), batch=1)
    s = LOGIT_STRIDE[name]
    with torch.no_grad():
        feat = student.features(image)
    assert feat.shape[-2:] == (-(-50 // s), -(-70 // s))


@pytest.mark.parametrize("name", NAMES)
def test_backbone_levels(name):
    student = _student(name, False).eval()
    low_ch, high_ch, os_ = BACKBONE[name]
    image, _ = _inputs()
    with torch.no_grad():
        low, high = student.backbone(image)
    assert low.shape == (2, low_ch, 16, 16)
    assert high.shape == (2, high_ch, 64 // os_, 64 // os_)


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("name", NAMES)
def test_classify_is_text_dot_product(name, background):
    student = _student(name, background).eval()
    image, text = _inputs()
    with torch.no_grad():
        feat = student.features(image)
        logits = student.classify(feat, text)
        out = student.train_outputs(image, text)
        full = student(image, text)
    expected = torch.einsum("cd,bdhw->bchw", text, feat)
    if background:
        bg = student.bg[0] / student.bg[0].norm()
        expected = torch.cat([torch.einsum("d,bdhw->bhw", bg, feat)[:, None], expected], 1)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(full, logits)
    logits2, feat2 = out
    torch.testing.assert_close(logits2, logits)
    torch.testing.assert_close(feat2, feat)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_backbone_and_bg_not_text(name):
    student = _student(name, True).train()
    student.zero_grad(set_to_none=True)
    image, text = _inputs()
    logits = student(image, text)
    gen = torch.Generator().manual_seed(2)
    target = torch.randint(0, C + 1, (2, *logits.shape[-2:]), generator=gen)
    F.cross_entropy(logits, target).backward()
    first = next(student.backbone.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert student.bg.grad is not None and student.bg.grad.abs().sum() > 0
    dead = [n for n, p in student.head.named_parameters() if p.grad is None or not p.grad.any()]
    assert not dead, dead
    assert text.grad is None
    names = [n for n, _ in student.named_parameters()]
    assert all(n.startswith(("backbone.", "head.")) or n == "bg" for n in names)
    assert not any(p.shape == text.shape for p in student.parameters())
    student.zero_grad(set_to_none=True)
    student.eval()


def test_dropout_only_in_training():
    torch.manual_seed(0)
    student = build_student(StudentCfg("deeplabv3plus_r18", D, dropout=0.5))
    feat, text = torch.randn(2, D, 8, 8), torch.randn(C, D)
    expected = torch.einsum("cd,bdhw->bchw", text, feat)
    torch.testing.assert_close(student.eval().classify(feat, text), expected, rtol=1e-4, atol=1e-4)
    student.train()
    assert not torch.allclose(student.classify(feat, text), expected, atol=1e-3)
    # Dropout2d on the features: with text = I each logit map is one feature channel, all 0 or 2.
    maps = student.classify(torch.ones(4, D, 3, 3), torch.eye(D))
    values = maps.amax(dim=(2, 3))
    assert torch.equal(maps.amin(dim=(2, 3)), values)
    assert set(values.unique().tolist()) == {0.0, 2.0}
    student.eval()


def test_classify_rejects_wrong_text_width():
    student = _student("deeplabv3plus_mbv3", False).eval()
    with pytest.raises(AssertionError, match="text must be"):
        student.classify(torch.randn(1, D, 4, 4), torch.randn(C, D + 1))


def test_output_stride_option():
    torch.manual_seed(0)
    student = build_student(StudentCfg("deeplabv3plus_r18", D, output_stride=8)).eval()
    image, text = _inputs()
    with torch.no_grad():
        _, high = student.backbone(image)
        logits = student(image, text)
    assert high.shape[-2:] == (8, 8) and logits.shape[-2:] == (16, 16)
    v2 = build_student(StudentCfg("deeplabv2_r101", D, output_stride=16)).eval()
    assert v2.output_stride == 16
    with torch.no_grad():
        assert v2(image, text).shape == (2, C, 4, 4)


@pytest.mark.parametrize(
    "kw",
    [
        dict(name="deeplabv3plus_mbv3", output_stride=8),
        dict(name="deeplabv3plus_r18", output_stride=4),
        dict(name="deeplabv3plus_r101", output_stride=32),
        dict(name="deeplabv3plus_r18", dropout=1.0),
        dict(name="deeplabv3plus_r18", embed_dim=0),
    ],
)
def test_bad_config(kw):
    kw = {"embed_dim": D, **kw}
    with pytest.raises(ConfigError):
        build_student(StudentCfg(**kw))


def test_unknown_name():
    with pytest.raises(UnknownNameError, match="deeplabv3plus_r18"):
        build_student(StudentCfg("deeplabv3_r50", D))


def _convs(layer):
    return {n: m for n, m in layer.named_modules() if isinstance(m, torch.nn.Conv2d)}


def test_dilate_layer_keeps_size_resnet18():
    layer = tvm.resnet18().layer4
    x = torch.randn(1, 256, 8, 8)
    assert layer(x).shape[-2:] == (4, 4)
    dilate_layer(layer, 2)
    assert layer(x).shape == (1, 512, 8, 8)
    convs = _convs(layer)
    assert all(m.stride == (1, 1) for m in convs.values())
    assert convs["1.conv1"].dilation == convs["1.conv2"].dilation == (2, 2)
    assert convs["1.conv1"].padding == (2, 2)
    assert convs["0.conv1"].dilation == (1, 1)  # contract_dilation: first block at half
    flat = tvm.resnet18().layer4
    dilate_layer(flat, 2, contract=False)
    assert all(m.dilation == (2, 2) for m in _convs(flat).values() if m.kernel_size == (3, 3))
    assert flat(x).shape == (1, 512, 8, 8)


def test_dilate_layer_matches_torchvision_bottleneck():
    ours, ref = tvm.resnet50(), tvm.resnet50(replace_stride_with_dilation=[False, True, True])
    dilate_layer(ours.layer3, 2)
    dilate_layer(ours.layer4, 4)
    got = {n: (m.stride, m.dilation, m.padding) for n, m in _convs(ours).items()}
    want = {n: (m.stride, m.dilation, m.padding) for n, m in _convs(ref).items()}
    assert got == want


def _classification_state(arch: str) -> dict:
    torch.manual_seed(7)
    net = tvm.resnet18() if arch == "r18" else tvm.mobilenet_v3_large()
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("arch,fmt", [("r18", "pth"), ("r18", "nested"), ("mbv3", "safetensors")])
def test_load_backbone_round_trip(tmp_path, arch, fmt):
    name = "deeplabv3plus_r18" if arch == "r18" else "deeplabv3plus_mbv3"
    state = _classification_state(arch)
    assert any(k.startswith(("fc.", "classifier.")) for k in state)
    path = tmp_path / f"w.{'safetensors' if fmt == 'safetensors' else 'pth'}"
    if fmt == "safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "meta": {"epoch": 3}} if fmt == "nested" else state, path)
    torch.manual_seed(0)
    student = build_student(StudentCfg(name, D))
    head_before = {k: v.clone() for k, v in student.head.state_dict().items()}
    load_backbone_weights(student, str(path))
    for k, v in student.backbone.state_dict().items():
        assert torch.equal(v, state[k]), k
    for k, v in student.head.state_dict().items():
        assert torch.equal(v, head_before[k]), k
    via_cfg = build_student(StudentCfg(name, D, weights=str(path)))
    first = next(iter(via_cfg.backbone.state_dict()))
    assert torch.equal(via_cfg.backbone.state_dict()[first], state[first])


def test_load_from_full_student_state(tmp_path):
    torch.manual_seed(3)
    src = build_student(StudentCfg("deeplabv3plus_mbv3", D, background=True))
    torch.save({"model": src.state_dict()}, tmp_path / "s.pt")
    dst = build_student(StudentCfg("deeplabv3plus_mbv3", D))
    load_backbone_weights(dst, str(tmp_path / "s.pt"))
    for k, v in dst.backbone.state_dict().items():
        assert torch.equal(v, src.backbone.state_dict()[k]), k


@pytest.mark.parametrize(
    "edit,match",
    [
        ("drop", r"missing keys: .*layer1\.0\.conv1\.weight"),
        ("extra", r"unexpected keys: .*layer9\.weight"),
        ("shape", r"shape mismatch: .*conv1\.weight"),
    ],
)
def test_load_backbone_key_errors(tmp_path, edit, match):
    state = _classification_state("r18")
    if edit == "drop":
        del state["layer1.0.conv1.weight"]
    elif edit == "extra":
        state["layer9.weight"] = torch.zeros(1)
    else:
        state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(state, tmp_path / "w.pth")
    student = _student("deeplabv3plus_r18", False)
    with pytest.raises(CheckpointError, match=match):
        load_backbone_weights(student, str(tmp_path / "w.pth"))


def test_load_backbone_unreadable(tmp_path):
    student = _student("deeplabv3plus_r18", False)
    (tmp_path / "bad.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_backbone_weights(student, str(tmp_path / "bad.pth"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_backbone_weights(student, str(tmp_path / "absent.pth"))


def test_imagenet_offline_is_checkpoint_error(monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match="local file"):
        build_student(StudentCfg("deeplabv3plus_r18", D, weights="imagenet"))


def test_imagenet_weights_loaded(monkeypatch):
    state, urls = _classification_state("r18"), []

    def fake(url, *args, **kwargs):
        urls.append(url)
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake)
    student = build_student(StudentCfg("deeplabv3plus_r18", D, weights="imagenet"))
    assert urls == [tvm.ResNet18_Weights.IMAGENET1K_V1.url]
    assert torch.equal(student.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
