"""Adapters that let other optimisation tools drive the service, as optional extras.

Each adapter is a client of the service: it reaches it over HTTP through
``hpo_service.client`` only (an import-linter contract keeps it so), so it runs wherever
the tool runs, next to a remote service, without the server's dependencies. The tools
themselves are extras (``pip install 'hpo_service[optuna]'``), never runtime
dependencies; importing an adapter without its tool says which extra to install.
"""
