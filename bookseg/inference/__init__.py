"""Using a trained model: load it (`trained_model`), outline the books in photos (`predict`, which writes
through `predict_outputs`), export it as a TensorFlow SavedModel (`export`), register it in the MLflow Model
Registry as a pyfunc that serves it (`registry`), and start a new training from it or from named weights
(`starting_weights`: `model.weights=run:<run id>` | `coco` | `imagenet` | a path).

Library code only: the `bookseg predict` / `bookseg export` command lines are wired in `bookseg.cli`.
"""
