"""The ``hpo`` command line: one package, one module per command group.

``main`` (serve, migrate, keys, extrapolate, and the parser that joins the rest),
``studies`` (studies and trials over HTTP through the SDK), ``worker`` (``hpo worker``),
``admin`` (export/import) and ``database`` (how commands open the database). This file
imports nothing, so ``python -m hpo_service.cli.worker`` never loads the server side.
"""
