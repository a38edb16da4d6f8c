"""Experiment tracking: MLflow runs (parent per job, child per fold), Keras callbacks and plots. The Model
Registry pyfunc that serves a job's model is `bookseg.inference.registry`."""

FINAL = "final"  # the `fold` tag and run name of a job's final model (`cv.final`), beside the folds' numbers
