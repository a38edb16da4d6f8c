"""Optuna sweeps over the Hydra config: the search space, the shared study, each job's trial.

The Hydra plugin that uses them is hydra_plugins/bookseg_optuna_sweeper (`+sweep=optuna`).
"""
