"""ONNX tensor names and their meanings, defined once for the exporter and every runtime."""

IMAGE = "image"
TEXT_EMBEDDINGS = "text_embeddings"
LOGITS = "logits"
LABELS = "labels"
# Not a graph input: the name a fixed-vocabulary graph gives its baked [C,D] text classifier
# initializer(s) ("text_classifier", "text_classifier.1", ...), so precision tools can find the
# final similarity and keep it in FP32.
TEXT_CLASSIFIER = "text_classifier"
# The separate text encoder graph (text_encoder.onnx, written with --text-encoder).
TEXT_TOKENS = "text_tokens"
TEXT_FEATURES = "text_features"

MEANINGS = {
    IMAGE: "float32 [1,3,H,W], RGB, (pixel[0..255] - mean) / std with the manifest's mean/std",
    TEXT_EMBEDDINGS: "float32 [C,D], L2-normalised text classifier, one row per class",
    LOGITS: (
        "float32 [1,C,h,w] at feature resolution: cosine logits in [-1,1] (-100 for classes "
        "removed by prompt denoising); with key smoothing on, smoothed scores "
        "W @ softmax(100*logits) (unbounded: the official spatial key normalisation does not "
        "keep them in [0,1])"
    ),
    LABELS: "int64 [1,H,W]: argmax over classes of the bilinearly upsampled logits, at input size",
    TEXT_TOKENS: (
        "int64 [N,L], 1 <= L <= the CLIP context length (77): CLIP BPE ids, start 49406, text, "
        "end 49407, zero padding (runtime.tokenizer); padding after the longest prompt's end "
        "token may be dropped (exact for CLIP's causal, end-token-pooled tower)"
    ),
    TEXT_FEATURES: (
        "float32 [N,D]: CLIP encode_text features, NOT normalised (L2-normalise before use)"
    ),
}
