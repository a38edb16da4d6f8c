"""Experiment tracking: MLflow runs (parent per job, child per fold), Keras callbacks, plots, and the
Model Registry pyfunc that serves a job's model (`registry`)."""
