"""Hand-run benchmarks; ``fundgym bench`` runs them from a source checkout."""
