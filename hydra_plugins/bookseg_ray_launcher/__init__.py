"""bookseg's Hydra launcher on Ray (`hydra/launcher: bookseg_ray`; conf/sweep/ray.yaml uses it).

Each sweep point runs as a Ray task: on a local Ray started for the sweep, or on a running cluster
(`hydra.launcher.ray.init.address=auto` on its head node, `ray://<head>:10001` from elsewhere). Hydra finds
plugins in the `hydra_plugins` namespace package; pyproject.toml packages this folder with bookseg.
hydra-ray-launcher is not used: it pins cloudpickle<3, which joblib (scikit-learn, the joblib launcher) rules out.
"""
