"""MaskCLIP+ (Zhou et al., ECCV 2022): a DeepLab student trained on MaskCLIP pseudo-labels; only
the student is exported. Model: ``training.students``, loop ``training.maskclip_plus``."""

from __future__ import annotations

from dataclasses import dataclass

from training.methods import MethodSpec, Published, option, register
from training.methods.spec import templates_option

SETTINGS = ("annotation_free", "zero_shot")
# training.students.STUDENTS keys, torch-free (a test checks they agree).
STUDENT_NAMES = ("deeplabv2_r101", "deeplabv3plus_r101", "deeplabv3plus_r18", "deeplabv3plus_mbv3")


@dataclass(frozen=True)
class MaskClipPlusCfg:
    """MaskCLIP+ export options.

    Attributes:
        image_size: square input side (multiple of 32; default: the checkpoint's crop, 512).
        templates: prompt template set (default: the checkpoint's, else MaskCLIP's 85).
        student: target network (``training.students.STUDENTS``); the checkpoint's when given.
    """

    image_size: int = option(
        512, "square input side, a multiple of 32 (default: the checkpoint's crop)"
    )
    templates: str = templates_option(
        "maskclip85", "prompt template set (default: the checkpoint's)"
    )
    student: str | None = option(
        None,
        "target network (default: the checkpoint's; required without --checkpoint)",
        choices=STUDENT_NAMES,
    )


SPEC = register(
    MethodSpec(
        name="maskclip_plus",
        summary="MaskCLIP+: a DeepLab / light student trained on MaskCLIP pseudo-labels",
        config=MaskClipPlusCfg,
        kind="student",
        exporter="export.builders:build_maskclip_plus",
        model_builder="training.students:build_student",
        wrapper="export.wrappers:LogitsOnnxModel",
        settings=SETTINGS,
        accepts=("checkpoint", "text_embeddings"),
        train_loop="training.train:maskclip_plus_loop",
        published=(
            Published("VOC20", 58.0, "R50", "annotation-free"),
            Published("VOC (15/5) hIoU", 87.4, "R101", "transductive, ZegCLIP's table"),
        ),
        smoke_options=(("image_size", 64), ("student", "deeplabv3plus_mbv3")),
    )
)
