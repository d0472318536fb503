"""Exception types shared by the runtime, the exporter and the training code."""


class OvssError(Exception):
    """Base class for every error this package raises on purpose."""


class InvalidImageError(OvssError, ValueError):
    """An image has the wrong rank, dtype, channel count or size, or cannot be decoded."""


class VocabularyError(OvssError, ValueError):
    """A vocabulary is empty, has duplicate or blank names, or does not match the model."""


class ModelFolderError(OvssError, RuntimeError):
    """A deployable folder, its manifest or its model file is missing, corrupt or inconsistent."""


class CheckpointError(OvssError, RuntimeError):
    """A checkpoint file is missing, unreadable, or its keys do not fit the model."""


class UnknownNameError(OvssError, ValueError):
    """An unknown method, backbone, class-list or backend name."""


class DatasetError(OvssError, ValueError):
    """A dataset folder has an unknown layout, or bad images, masks, labels or class split."""


class ConfigError(OvssError, ValueError):
    """A setting is out of range or inconsistent with the others (or with the model)."""


class CalibrationError(OvssError, ValueError):
    """Unusable calibration data or a precision variant that cannot be built or selected."""


class SourceError(OvssError, RuntimeError):
    """A frame source (camera, stream, video file, image folder) cannot be opened or keeps failing,
    or the video output for its frames cannot be written."""


class FrameTooLargeError(SourceError):
    """A source gives frames over the pixel limit (``--max-pixels``): fatal, never retried by
    reconnecting (the next frame would be as large)."""
