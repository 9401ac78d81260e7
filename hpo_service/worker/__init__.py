"""The worker: lease trials over HTTP, run them, heartbeat, report, and never lose work.

``loop.Worker`` is the loop; ``command`` runs a user's command as a child process and
``child_lifetime`` makes sure it dies with the worker; ``heartbeat`` and ``reporter`` are the
per-trial threads; ``progress`` shows what is happening. It reaches the service only
through ``hpo_service.client``.
"""
