// Exception types of the C++ runtime, mirroring runtime/errors.py.
#pragma once

#include <stdexcept>
#include <string>

namespace ovss {

/// Base class for every error this library raises on purpose (the programs exit 2 on it).
struct OvssError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

/// An image has the wrong depth, channel count or size, or cannot be decoded.
struct InvalidImageError : OvssError {
    using OvssError::OvssError;
};

/// A decoded image would exceed the pixel limit (``--max-pixels``).
struct ImageTooLargeError : InvalidImageError {
    using InvalidImageError::InvalidImageError;
};

/// A deployable folder, its manifest or its model file is missing, corrupt or inconsistent.
struct ModelFolderError : OvssError {
    using OvssError::OvssError;
};

/// A vocabulary (class names, text embeddings) does not fit the model.
struct VocabularyError : OvssError {
    using OvssError::OvssError;
};

/// A setting is out of range or inconsistent with the others.
struct ConfigError : OvssError {
    using OvssError::OvssError;
};

/// A frame source cannot be opened or keeps failing, or its output cannot be written.
struct SourceError : OvssError {
    using OvssError::OvssError;
};

/// An output file or folder cannot be written (runtime/outputs.py OutputPathError): a folder
/// where a file is needed (or the reverse), an ancestor that is a file, or no write permission.
struct OutputPathError : OvssError {
    using OvssError::OvssError;
};

/// The requested backend cannot run here (not compiled in, no engine, no GPU).
struct BackendUnavailable : OvssError {
    using OvssError::OvssError;
};

}  // namespace ovss
