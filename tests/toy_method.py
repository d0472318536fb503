"""A toy method defined in this one file: MaskCLIP's bare value path (no residual, no FFN) with
its dense features box-filtered (3x3) before the text classifier. Registering it gives it the
export, parity, runtime, precision and vocabulary tests (``tests/test_toy_method.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from training.methods import MethodSpec, option
from training.methods.spec import templates_option

NAME = "toy_boxclip"


@dataclass(frozen=True)
class ToyCfg:
    """Toy options: input side, templates, the box filter's side and a logit scale."""

    image_size: int = option(224, "square input side in pixels")
    templates: str = templates_option("single")
    box: int = option(3, "box filter side in feature cells (odd)")
    logit_scale: float = option(10.0, "scale on the cosine logits")
    mean: tuple[float, float, float] = option((122.771, 116.746, 104.094), "input mean")
    std: tuple[float, float, float] = option((68.501, 66.632, 70.323), "input std")


def build_toy(clip, cfg: ToyCfg):
    """The toy model over ``clip``'s ViT: forward(image, text) -> [B,C,S/p,S/p] logits."""
    import torch.nn.functional as F
    from torch import nn

    from training.refine import classify
    from training.surgery import SurgeryViT

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = SurgeryViT(clip.model.visual, cfg.image_size, "value", False, False)
            self.feature_stride = self.dense.patch

        def forward(self, image, text):
            feat = F.avg_pool2d(
                self.dense(image), cfg.box, stride=1, padding=cfg.box // 2, count_include_pad=False
            )
            return classify(feat, text) * cfg.logit_scale

    return Toy().eval()


SPEC = MethodSpec(
    name=NAME,
    summary="toy: box-filtered bare value path",
    config=ToyCfg,
    kind="training_free",
    exporter="export.builders:build_training_free",
    model_builder="toy_method:build_toy",
    wrapper="export.wrappers:LogitsOnnxModel",
)
