"""Models, text classifiers and CLIP loading (needs the ``export`` extra: torch, open_clip)."""
