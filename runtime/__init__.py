"""Torch-free runtime for ovss-edge deployable folders.

Imports only numpy (and Pillow for image files); backends are imported lazily. Never import torch or
``training`` from here. Entry points: ``runtime.segmenter.Segmenter`` and
``python -m runtime.infer``.
"""

__version__ = "0.1.0"
