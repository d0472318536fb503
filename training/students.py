"""MaskCLIP+ target ("student") networks: segmentation nets classified by the CLIP text matrix.

Official (MaskCLIP+, chongzhou96/MaskCLIP on mmseg 0.x): the decode head outputs D-channel
features (D = CLIP text width, mmseg ``channels`` = ``text_channels``) and the logits are
``conv2d(feat, text[:, :, None, None])``: a raw dot product, no feature normalisation, no bias.
With ``cls_bg`` a learnable background embedding ``bg`` [1, D] (init randn) is class 0:
``cat([conv2d(feat, normalize(bg)), conv2d(feat, text)], 1)``. The official students are
``deeplabv2_r101`` (``ASPPHeadV2``: four dilated 3x3 branches, summed) and ``deeplabv3plus_r101``
(``DepthwiseSeparableASPPHead``, dilations 1/12/24/36, 48-channel layer1 skip), both on a
ResNet-101 dilated to output stride 8 with mmseg's ``contract_dilation=True`` (the first block of a
dilated layer uses half the dilation, as torchvision's ``replace_stride_with_dilation`` does).
In the official configs the ASPPHeadV2 branches inherit the head's ``norm_cfg`` (SyncBN) and the
default ReLU, so each branch is conv (no bias) + BN + ReLU before the sum; we do the same.

Ours:

* ``deeplabv3plus_r18`` and ``deeplabv3plus_mbv3``: light edge students with the same v3+ head at
  inner width 128, then a bias-free 1x1 conv to D; backbone output stride 16 by default.
* Deviation: every backbone is torchvision's (ResNet "v1b": one 7x7 stem conv, stride on the 3x3
  conv; MobileNetV3-Large), NOT mmseg's ResNetV1c deep stem (three 3x3 convs) used by MaskCLIP+.
  Official MaskCLIP+ checkpoints therefore do not load, and ``weights="imagenet"`` means
  torchvision's ImageNet weights, not ``open-mmlab://resnet101_v1c``.
* ``dropout`` defaults to mmseg's 0.1; the official MaskCLIP+ configs set ``dropout_ratio=0``.

Head init follows mmcv ``ConvModule``: Kaiming normal (fan_out, ReLU), zero bias, BN weight 1.
Training needs a batch of at least 2 (BN on the 1x1 image-pooling branch), as in mmseg.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

from runtime.errors import CheckpointError, ConfigError, UnknownNameError
from training.checkpoint import read_raw

log = logging.getLogger(__name__)

V3PLUS_DILATIONS = (1, 12, 24, 36)
V2_DILATIONS = (6, 12, 18, 24)
LIGHT_CHANNELS = 128
HEAD_PREFIXES = ("fc.", "classifier.")  # torchvision classification heads, dropped on load


@dataclass(frozen=True)
class StudentCfg:
    """One student network.

    Attributes:
        name: a key of ``STUDENTS``.
        embed_dim: D, the CLIP text width the classifier dots with (512 for ViT-B/16).
        background: learnable background embedding as class 0 (MaskCLIP+ ``cls_bg``).
        weights: "none" (random init), "imagenet" (torchvision ImageNet weights, downloaded), or a
            path to a backbone / torchvision classification checkpoint (.pth/.pt/.safetensors).
        output_stride: backbone stride; None = the student's default (r101: 8, r18/mbv3: 16).
            ResNets accept 8 or 16, MobileNetV3 only 16.
        dropout: Dropout2d probability before the classifier, in [0, 1).
    """

    name: str
    embed_dim: int
    background: bool = False
    weights: str = "none"
    output_stride: int | None = None
    dropout: float = 0.1


class StudentOutput(NamedTuple):
    """``train_outputs`` result; unpacks as ``logits, feat``."""

    logits: torch.Tensor  # [B, C + num_extra, h, w]
    feat: torch.Tensor  # [B, D, h, w], before dropout, not detached


def dilate_layer(layer: nn.Sequential, dilation: int, contract: bool = True) -> None:
    """Make a ResNet layer (BasicBlock or Bottleneck blocks) keep its input size, in place.

    Every stride-2 conv (3x3 and the 1x1 downsample) becomes stride 1, and every 3x3 conv gets
    ``dilation`` with padding = dilation, so the spatial size is preserved. With ``contract`` the
    first block uses ``dilation // 2`` (mmseg ``contract_dilation``; torchvision does the same).
    """
    assert dilation >= 1, f"dilation must be >= 1, got {dilation}"
    for i, block in enumerate(layer):
        d = max(dilation // 2, 1) if (contract and i == 0) else dilation
        for conv in block.modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                conv.dilation, conv.padding = (d, d), (d, d)


def _out_channels(layer: nn.Module) -> int:
    """Output width of a ResNet layer: its last BatchNorm's width."""
    return [m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk without avgpool/fc; parameter names are torchvision's minus ``fc.``.

    ``forward``: image [B,3,H,W] -> (low [B, low_channels, ceil(H/4), ceil(W/4)] from layer1,
    high [B, high_channels, ceil(H/s), ceil(W/s)] from layer4), s = ``output_stride``.
    """

    def __init__(self, net: tvm.ResNet, output_stride: int):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4
        if output_stride == 8:
            dilate_layer(self.layer3, 2)
            dilate_layer(self.layer4, 4)
        else:
            dilate_layer(self.layer4, 2)
        self.output_stride = output_stride
        self.low_channels = _out_channels(self.layer1)
        self.high_channels = _out_channels(self.layer4)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(image)))))
        return low, self.layer4(self.layer3(self.layer2(low)))


def _stride4_index(features: nn.Sequential) -> int:
    """Index of the last block at stride 4: the one before the second stride-2 InvertedResidual."""
    strided = [i for i, block in enumerate(features) if getattr(block, "_is_cn", False)]
    return strided[1] - 1


class MobileNetV3Backbone(nn.Module):
    """torchvision MobileNetV3 ``features`` (built with ``dilated=True``: output stride 16).

    Parameter names are torchvision's minus ``classifier.``. ``forward``: image [B,3,H,W] ->
    (low [B, 24, ceil(H/4), ceil(W/4)], high [B, 960, ceil(H/16), ceil(W/16)]) for the large model.
    """

    def __init__(self, net: tvm.MobileNetV3):
        super().__init__()
        self.features = net.features
        self.low_index = _stride4_index(net.features)
        self.output_stride = 16
        self.low_channels = net.features[self.low_index].out_channels
        self.high_channels = net.features[-1].out_channels

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, low = image, image
        for i, block in enumerate(self.features):
            x = block(x)
            if i == self.low_index:  # static index, not data-dependent
                low = x
        return low, x


def _cbr(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    """mmcv ConvModule: conv (no bias) + BN + ReLU, 'same' padding."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _sep(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    """mmcv DepthwiseSeparableConvModule: depthwise 3x3 (dilated) + BN + ReLU, 1x1 + BN + ReLU."""
    depthwise = nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
    )
    return nn.Sequential(depthwise, _cbr(cin, cout, 1))


def _init_head(module: nn.Module) -> None:
    """mmcv ConvModule init: Kaiming normal (fan_out, relu), zero bias; BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class AsppV2Head(nn.Module):
    """DeepLab-v2 ASPP as MaskCLIP+ builds mmseg's ASPPHeadV2: 3x3 conv+BN+ReLU branches, summed.

    ``forward(low, high)``: high [B, in_channels, h, w] -> [B, channels, h, w]; ``low`` is unused
    (same signature as the v3+ head).
    """

    def __init__(self, in_channels: int, channels: int, dilations=V2_DILATIONS):
        super().__init__()
        self.aspp = nn.ModuleList(_cbr(in_channels, channels, 3, d) for d in dilations)
        _init_head(self)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        out = self.aspp[0](high)
        for branch in self.aspp[1:]:
            out = out + branch(high)
        return out


class SepAsppPlusHead(nn.Module):
    """DeepLab-v3+ head (mmseg DepthwiseSeparableASPPHead), shared by every v3+ student.

    Image pooling + ASPP (dilation 1: 1x1 conv; others: depthwise-separable 3x3) -> concat ->
    3x3 bottleneck to ``channels``; upsample (bilinear, align_corners=False) to the low-level size,
    concat with the 1x1-projected low-level features (``low_out`` = 48), two separable 3x3 convs.
    ``out_channels`` != ``channels`` adds a bias-free 1x1 projection (the light students).

    ``forward(low, high)``: low [B, low_channels, h4, w4], high [B, in_channels, hs, ws]
    -> [B, out_channels, h4, w4].
    """

    def __init__(
        self,
        in_channels: int,
        low_channels: int,
        channels: int,
        out_channels: int,
        dilations=V3PLUS_DILATIONS,
        low_out: int = 48,
    ):
        super().__init__()
        self.image_pool = _cbr(in_channels, channels, 1)
        self.aspp = nn.ModuleList(
            _cbr(in_channels, channels, 1) if d == 1 else _sep(in_channels, channels, d)
            for d in dilations
        )
        self.bottleneck = _cbr((len(dilations) + 1) * channels, channels, 3)
        self.c1_bottleneck = _cbr(low_channels, low_out, 1)
        self.sep_bottleneck = nn.Sequential(
            _sep(channels + low_out, channels), _sep(channels, channels)
        )
        self.proj = (
            nn.Identity()
            if out_channels == channels
            else nn.Conv2d(channels, out_channels, 1, bias=False)
        )
        _init_head(self)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(F.adaptive_avg_pool2d(high, 1))
        outs = [F.interpolate(pooled, size=high.shape[-2:], mode="bilinear", align_corners=False)]
        outs += [branch(high) for branch in self.aspp]
        x = self.bottleneck(torch.cat(outs, dim=1))
        x = F.interpolate(x, size=low.shape[-2:], mode="bilinear", align_corners=False)
        x = self.sep_bottleneck(torch.cat([x, self.c1_bottleneck(low)], dim=1))
        return self.proj(x)


class Student(nn.Module):
    """Backbone + decode head to D-channel features, classified by a given text matrix.

    Attributes:
        output_stride: stride of ``features``/logits relative to the input (v2: the backbone's
            stride, 8 by default; v3+: 4).
        num_extra: 1 with a background embedding (class 0), else 0.
        bg: the background embedding [1, D] (a Parameter) or None.

    Inputs are ImageNet-normalised float images [B, 3, H, W]. Every stride-2 op rounds up, so
    features are [B, D, ceil(H/s), ceil(W/s)]; H, W multiples of 32 give exactly H/s x W/s.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        embed_dim: int,
        output_stride: int,
        background: bool = False,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.embed_dim, self.output_stride = embed_dim, output_stride
        self.dropout = nn.Dropout2d(dropout)
        self.bg = nn.Parameter(torch.randn(1, embed_dim)) if background else None
        self.num_extra = int(background)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """image [B,3,H,W] ImageNet-normalised -> feat [B, D, ceil(H/s), ceil(W/s)]."""
        low, high = self.backbone(image)
        return self.head(low, high)

    def classify(self, feat: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """feat [B,D,h,w], text [C,D] -> logits [B, C + num_extra, h, w] (raw dot products).

        Dropout2d (training mode only) is applied to ``feat`` first. With a background, channel 0
        is ``normalize(bg) . feat`` and the text classes follow. ``text`` is used as given (the
        caller normalises it; it is never a parameter of the student).
        """
        if not torch.jit.is_tracing():  # traced shapes are tensors; the check is static anyway
            assert text.dim() == 2 and text.shape[1] == feat.shape[1], (
                f"text must be [C, {feat.shape[1]}], got {tuple(text.shape)}"
            )
        feat = self.dropout(feat)
        logits = F.conv2d(feat, text.to(feat.dtype)[:, :, None, None])
        if self.bg is None:
            return logits
        bg = F.normalize(self.bg, dim=-1).to(feat.dtype)
        return torch.cat([F.conv2d(feat, bg[:, :, None, None]), logits], dim=1)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """image [B,3,H,W], text [C,D] -> logits [B, C + num_extra, ceil(H/s), ceil(W/s)]."""
        return self.classify(self.features(image), text)

    def train_outputs(self, image: torch.Tensor, text: torch.Tensor) -> StudentOutput:
        """(logits, feat) for losses that also need the features (feat is pre-dropout)."""
        feat = self.features(image)
        return StudentOutput(self.classify(feat, text), feat)


def _resnet(make: Callable[..., tvm.ResNet], output_stride: int) -> ResNetBackbone:
    return ResNetBackbone(make(weights=None), output_stride)


def _mbv3(output_stride: int) -> MobileNetV3Backbone:
    return MobileNetV3Backbone(tvm.mobilenet_v3_large(weights=None, dilated=True))


def _v2_head(backbone: nn.Module, embed_dim: int) -> AsppV2Head:
    return AsppV2Head(backbone.high_channels, embed_dim)


def _v3plus_head(backbone: nn.Module, embed_dim: int, channels: int | None = None):
    """v3+ head with inner width ``channels`` (None = D, the official r101 setting)."""
    return SepAsppPlusHead(
        backbone.high_channels, backbone.low_channels, channels or embed_dim, embed_dim
    )


_light_head = partial(_v3plus_head, channels=LIGHT_CHANNELS)  # ours: 128 inner, 1x1 to D


def _check(cfg: StudentCfg, default_os: int, allowed_os: tuple[int, ...]) -> int:
    """Validate ``cfg``'s numbers; return the backbone output stride."""
    os_ = default_os if cfg.output_stride is None else cfg.output_stride
    if os_ not in allowed_os:
        raise ConfigError(f"{cfg.name}: output_stride must be one of {allowed_os}, got {os_}")
    if cfg.embed_dim < 1:
        raise ConfigError(f"embed_dim must be >= 1, got {cfg.embed_dim}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {cfg.dropout}")
    return os_


def _build(
    cfg: StudentCfg,
    *,
    backbone: Callable[[int], nn.Module],
    head: Callable[[nn.Module, int], nn.Module],
    default_os: int,
    allowed_os: tuple[int, ...],
    imagenet: tvm.WeightsEnum,
) -> Student:
    """Validate, assemble backbone + head, then load ``cfg.weights`` into the backbone."""
    net = backbone(_check(cfg, default_os, allowed_os))
    dec = head(net, cfg.embed_dim)
    stride = 4 if isinstance(dec, SepAsppPlusHead) else net.output_stride
    student = Student(net, dec, cfg.embed_dim, stride, cfg.background, cfg.dropout)
    if cfg.weights == "imagenet":
        _load_state(student, _download(imagenet), f"torchvision {imagenet}")
    elif cfg.weights != "none":
        load_backbone_weights(student, cfg.weights)
    return student


def build_deeplabv2_r101(cfg: StudentCfg) -> Student:
    """Official: ResNet-101 (OS 8) + DeepLab-v2 ASPP straight to D channels; logits at OS 8."""
    return _build(
        cfg,
        backbone=partial(_resnet, tvm.resnet101),
        head=_v2_head,
        default_os=8,
        allowed_os=(8, 16),
        imagenet=tvm.ResNet101_Weights.IMAGENET1K_V1,
    )


def build_deeplabv3plus_r101(cfg: StudentCfg) -> Student:
    """Official: ResNet-101 (OS 8) + DeepLab-v3+ head with ``channels`` = D; logits at OS 4."""
    return _build(
        cfg,
        backbone=partial(_resnet, tvm.resnet101),
        head=_v3plus_head,
        default_os=8,
        allowed_os=(8, 16),
        imagenet=tvm.ResNet101_Weights.IMAGENET1K_V1,
    )


def build_deeplabv3plus_r18(cfg: StudentCfg) -> Student:
    """Ours: ResNet-18 (OS 16) + light v3+ head (128 channels, 1x1 to D); logits at OS 4."""
    return _build(
        cfg,
        backbone=partial(_resnet, tvm.resnet18),
        head=_light_head,
        default_os=16,
        allowed_os=(8, 16),
        imagenet=tvm.ResNet18_Weights.IMAGENET1K_V1,
    )


def build_deeplabv3plus_mbv3(cfg: StudentCfg) -> Student:
    """Ours: MobileNetV3-Large (dilated, OS 16) + light v3+ head; logits at OS 4."""
    return _build(
        cfg,
        backbone=_mbv3,
        head=_light_head,
        default_os=16,
        allowed_os=(16,),
        imagenet=tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    )


STUDENTS: dict[str, Callable[[StudentCfg], Student]] = {
    "deeplabv2_r101": build_deeplabv2_r101,
    "deeplabv3plus_r101": build_deeplabv3plus_r101,
    "deeplabv3plus_r18": build_deeplabv3plus_r18,
    "deeplabv3plus_mbv3": build_deeplabv3plus_mbv3,
}


def build_student(cfg: StudentCfg) -> Student:
    """The student ``cfg.name`` with backbone weights from ``cfg.weights`` (see StudentCfg)."""
    if cfg.name not in STUDENTS:
        raise UnknownNameError(f"unknown student {cfg.name!r}; known students: {sorted(STUDENTS)}")
    return STUDENTS[cfg.name](cfg)


def _download(weights: tvm.WeightsEnum) -> dict:
    """torchvision's state dict for ``weights`` (from the torch hub cache or the network)."""
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=False, check_hash=True
        )
    except Exception as e:  # noqa: BLE001 - URLError, hash mismatch, corrupt cache file, ...
        raise CheckpointError(
            f"cannot get {weights} from {weights.url} ({type(e).__name__}: {e}); offline, download "
            f"it elsewhere and pass the local file as weights=<path>"
        ) from e


def _backbone_state(obj: dict) -> dict[str, torch.Tensor]:
    """Unwrap "state_dict"/"model", strip "module."/"backbone.", drop fc.*/classifier.*."""
    wrappers = ("state_dict", "model")
    while any(isinstance(obj.get(k), dict) for k in wrappers):
        obj = next(obj[k] for k in wrappers if isinstance(obj.get(k), dict))
    state = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}


def _names(keys) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")


def _load_state(student: Student, obj: dict, source: str) -> None:
    """Strictly load a (possibly wrapped) backbone state dict into ``student.backbone``."""
    state, own = _backbone_state(obj), student.backbone.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    problems = [f"missing keys: {_names(missing)}"] if missing else []
    problems += [f"unexpected keys: {_names(unexpected)}"] if unexpected else []
    bad = [k for k in own.keys() & state.keys() if own[k].shape != state[k].shape]
    problems += [f"shape mismatch: {_names(bad)}"] if bad else []
    if problems:
        raise CheckpointError(
            f"{source} does not fit the {type(student.backbone).__name__}: " + "; ".join(problems)
        )
    student.backbone.load_state_dict(state, strict=True)
    log.info("loaded %d backbone tensors from %s", len(state), source)


def load_backbone_weights(student: Student, path: str | Path) -> None:
    """Load backbone weights from ``path`` (.pth/.pt via ``torch.load(weights_only=True)``, or
    .safetensors): a torchvision classification state dict (fc.*/classifier.* are dropped) or a
    bare backbone state dict, possibly nested under "state_dict" or "model". Strict on the backbone
    keys; CheckpointError names missing/unexpected/mis-shaped keys, or says the file is unreadable.
    """
    _load_state(student, read_raw(path), repr(str(path)))
