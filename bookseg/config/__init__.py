"""Structured-config schema (Hydra ConfigStore) and its validation."""
