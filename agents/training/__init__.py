"""Training: PPO, SAC, TD3, A2C or PPO-Lagrangian from a config file, on the batched environment.

* :mod:`fundgym.agents.training.train`: :func:`fundgym.agents.training.train.train` and the run
  directory it writes (model, normalisation, checkpoints, evaluations, the resolved config);
* :mod:`fundgym.agents.training.lagrangian`: PPO with a Lagrange multiplier on the episode's
  solvency cost against a budget (``algo: ppo_lagrangian``);
* :mod:`fundgym.agents.training.sb3_env`: the batched environment as a stable-baselines3 ``VecEnv``.

The config itself (:mod:`fundgym.agents.config`) sits lower, since evaluation and export read the
configs of finished runs without importing stable-baselines3's training machinery.
"""
