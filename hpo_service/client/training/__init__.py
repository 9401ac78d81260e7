"""Built-in proxy models and the data they train on (no downloads).

The worker calls ``run_proxy``; everything else is exposed for benchmarks and tests.
"""

from hpo_service.client.training.runner import PROXIES, ProxyResult, default_shape, run_proxy

__all__ = ["PROXIES", "ProxyResult", "default_shape", "run_proxy"]
