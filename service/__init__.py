"""cnn-serve: an HTTP service for CNN digit classifiers exported to ONNX."""
