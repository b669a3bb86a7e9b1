"""fundgym's simulator: exchange mechanics over numpy arrays (and, later, the Gymnasium env).

This package imports only numpy and gymnasium, never torch or stable-baselines3, so that a
risk engine or a JAX/NumPy user can take the simulator without the training stack.
"""

__all__: list[str] = []
