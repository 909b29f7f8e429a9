"""gato-jax: one transformer, one set of weights, every modality as tokens (Reed et al. 2022)."""
