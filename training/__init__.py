"""Training, evaluation and ONNX export of the classic Keras MNIST CNNs."""
