"""Built-in class lists: re-exported from ``runtime.class_names``, where they live (torch-free)."""

from runtime.class_names import ADE20K, BUILTIN, CAMVID, CITYSCAPES, COCO_STUFF, CONTEXT, VOC

__all__ = ["ADE20K", "BUILTIN", "CAMVID", "CITYSCAPES", "COCO_STUFF", "CONTEXT", "VOC"]
