"""Analyses of data sets and finished experiments: anchor coverage (`bookseg anchors`) and MLflow
reports (`bookseg report`)."""
