"""Using a trained model: load it (`trained_model`), outline the books in photos (`predict`, which writes
through `predict_outputs`) and export it as a TensorFlow SavedModel (`export`).

Library code only: the `bookseg predict` / `bookseg export` command lines are wired in `bookseg.cli`.
"""
