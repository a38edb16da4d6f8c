"""bookseg: Mask R-CNN on TensorFlow 2 / Keras 3 that outlines every book in a photo.

Keras 3 picks its backend when first imported, so the TensorFlow backend is fixed here,
before any submodule imports keras.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
