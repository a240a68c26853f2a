"""``python -m training``: the command line of ``training/cli.py``, with TensorFlow imported
first and quietly (``training/quiet.py``), so that a CPU machine prints no CUDA noise."""

import sys

from training.quiet import tensorflow_quietly

if __name__ == "__main__":
    tensorflow_quietly()
    from training.cli import main

    sys.exit(main())
