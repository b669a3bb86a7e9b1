"""Shared training overrides for the tests that need a real (tiny) run."""

from fundgym.envs.controls import PARAMS

# A few seconds of PPO: 4 exchanges x 32 accounts, one-hour episodes of the training sampler
# (6 decisions), evaluation and checkpoints halfway.
TINY_TRAIN = [
    "n_envs=4",
    "env.n_accounts=32",
    "env.horizon_minutes=60",
    "total_timesteps=256",
    "hyperparameters.n_steps=16",
    "hyperparameters.batch_size=32",
    "hyperparameters.n_epochs=2",
    "eval.freq=128",
    "eval.episodes=2",
    "checkpoint.freq=128",
]

# Every lever controlled, the volatile bucket included, on plain actions (the default's
# allocation settings reset: no centred levers, every decision, no turnover budget, no extra
# weight on the fund's PnL), for tests of what the allocation adds: softmax weights, allocation
# columns.
ALL_NINE = [
    "env.controlled=[" + ", ".join(PARAMS) + "]",
    "env.allocation_buckets=[stable, yield, volatile, hedge]",
    "centred_levers=[]",
    "env.allocation_minutes=null",
    "env.allocation_turnover_frac=null",
    "env.reward.fund_pnl=0",
]
