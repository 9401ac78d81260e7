"""Built-in proxy models, the data they train on (no downloads), and the torch side of scaling.

The worker calls ``run_proxy``; ``torch_setup.ScaledSetup`` turns a study's scale config
into per-module initialisation, multipliers and optimiser groups for any torch model, and
``muon`` holds the Muon and Lion optimisers it can build. Nothing here imports the
service side: a GPU box can train proxies with only the worker's dependencies.
"""

from hpo_service.proxies.runner import PROXIES, ProxyResult, default_shape, run_proxy

__all__ = ["PROXIES", "ProxyResult", "default_shape", "run_proxy"]
