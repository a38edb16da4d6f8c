"""Experiment tracking: MLflow runs (parent per job, child per fold), Keras callbacks, plots."""
