// ONNX tensor names shared with the exporter (runtime/io_names.py).
#pragma once

namespace ovss::io_names {

inline constexpr const char* kImage = "image";  ///< float32 [1,3,H,W], or uint8 (input_format)
inline constexpr const char* kTextEmbeddings = "text_embeddings";  ///< float32 [C,D]
inline constexpr const char* kLogits = "logits";                  ///< float32 [1,C,h,w]
/// float32 [1,C,h,w] (ZegCLIP / CLIP-RC, optional): pre-sigmoid mask logits; logits = sigmoid(them) - bias
inline constexpr const char* kMaskLogits = "mask_logits";
inline constexpr const char* kLabels = "labels";  ///< uint8 / int32 [1,H,W] (manifest postprocess)
inline constexpr const char* kScores = "scores";  ///< float32 [1,H,W] top-class score (postprocess)

}  // namespace ovss::io_names
