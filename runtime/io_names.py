"""ONNX tensor names and their meanings, defined once for the exporter and every runtime."""

IMAGE = "image"
TEXT_EMBEDDINGS = "text_embeddings"
LOGITS = "logits"
LABELS = "labels"
MASK_LOGITS = "mask_logits"
SCORES = "scores"
# Not a graph input: the name a fixed-vocabulary graph gives its baked [C,D] text classifier
# initializer(s) ("text_classifier", "text_classifier.1", ...), so precision tools can find the
# final similarity and keep it in FP32.
TEXT_CLASSIFIER = "text_classifier"
# The separate text encoder graph (text_encoder.onnx, written with --text-encoder).
TEXT_TOKENS = "text_tokens"
TEXT_FEATURES = "text_features"

# IMAGE for the uint8 input formats (manifest preprocess.input_format uint8-nhwc / uint8-nchw).
IMAGE_UINT8_MEANING = (
    "uint8 [1,H,W,3] (uint8-nhwc) or [1,3,H,W] (uint8-nchw), RGB 0..255 resized to the input "
    "size only: the graph casts to float32, transposes and normalises with the manifest's mean/std"
)

MEANINGS = {
    IMAGE: "float32 [1,3,H,W], RGB, (pixel[0..255] - mean) / std with the manifest's mean/std",
    TEXT_EMBEDDINGS: "float32 [C,D], L2-normalised text classifier, one row per class",
    LOGITS: (
        "float32 [1,C,h,w] at feature resolution: cosine logits in [-1,1] (-100 for classes "
        "removed by prompt denoising); with key smoothing on, smoothed scores "
        "W @ softmax(100*logits) (unbounded: the official spatial key normalisation does not "
        "keep them in [0,1])"
    ),
    MASK_LOGITS: (
        "float32 [1,C,h,w] at feature resolution (ZegCLIP / CLIP-RC): the mask logits before "
        "the sigmoid and the seen bias (logits = sigmoid(mask_logits) - bias); the slide path "
        "upsamples them first and applies sigmoid - bias per pixel, as the official code"
    ),
    LABELS: (
        "uint8 (fixed vocabulary of <= 255 classes) or int32 [1,H,W], H x W = the manifest's "
        "postprocess.output_hw: class index in [0,C), argmax over classes (first maximum) of the "
        "logits bilinearly resized to H x W (align_corners=False, edges clamped). The export's "
        "own parity graphs give an int64 label map of this name at input size (never deployed)"
    ),
    SCORES: (
        "float32 [1,H,W] at postprocess.output_hw: the top class's score; manifest score "
        "'softmax': max over classes of softmax(resized logits) in (0,1]; 'probability': max "
        "over classes of the resized logits (sigmoid scores minus the seen-class bias)"
    ),
    TEXT_TOKENS: (
        "int64 [N,L], 1 <= L <= the CLIP context length (77): CLIP BPE ids, start 49406, text, "
        "end 49407, zero padding (runtime.tokenizer); padding after the longest prompt's end "
        "token may be dropped (exact for CLIP's causal, end-token-pooled tower)"
    ),
    TEXT_FEATURES: (
        "float32 [N,D]: CLIP encode_text features, NOT normalised (L2-normalise before use)"
    ),
}
