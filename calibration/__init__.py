"""FP16 and INT8 (explicit Q/DQ) variants of deployable folders (issue: Precision). Not built yet."""
