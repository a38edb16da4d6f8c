"""The cross-validated experiment behind `python -m bookseg.run`: data, folds, one training per fold."""
