"""bookseg's Hydra sweeper on Optuna >= 4 (`hydra/sweeper: bookseg_optuna`; conf/sweep/optuna.yaml uses it).

Hydra finds plugins in the `hydra_plugins` namespace package; pyproject.toml packages this folder with
bookseg. The logic lives in bookseg/sweep/: study.py (sweeper side), trial.py (job side), space.py.
"""
