"""The worker side: an HTTP client for the service (and, later, the worker loop)."""

from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError

__all__ = ["HPOClient", "ProblemError"]
