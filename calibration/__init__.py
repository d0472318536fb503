"""FP16 and INT8 (explicit Q/DQ) variants of deployable folders, and their accuracy cost."""
