"""cnn-serve: an HTTP service for CNN digit classifiers exported to ONNX."""

import os

# NumPy's BLAS (the reliability distance's matrix product) must not start a thread per core in
# every worker: with one worker per CPU, those threads spin against each other and ONNX Runtime
# and cut throughput several times. Set before NumPy is first imported; an operator's own
# setting wins.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
