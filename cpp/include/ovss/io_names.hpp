// ONNX tensor names shared with the exporter (runtime/io_names.py).
#pragma once

namespace ovss::io_names {

inline constexpr const char* kImage = "image";                    ///< float32 [1,3,H,W]
inline constexpr const char* kTextEmbeddings = "text_embeddings";  ///< float32 [C,D]
inline constexpr const char* kLogits = "logits";                  ///< float32 [1,C,h,w]

}  // namespace ovss::io_names
