"""hpo_service: a Bayesian-optimisation service for tuning large networks on small proxies."""

__version__ = "0.1.0"

__all__ = ["__version__"]
