"""The runner's config: structured schema (Hydra ConfigStore), validation, the compose helper, and the factory
that turns a config into model, stage and optimizer objects."""
