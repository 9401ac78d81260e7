"""The typed Python SDK of the service: ``HPOClient`` over httpx, and its problem errors."""

from hpo_service.client.client import HPOClient
from hpo_service.client.errors import ProblemError

__all__ = ["HPOClient", "ProblemError"]
