"""``python -m hpo_service`` runs the ``hpo`` command."""

from hpo_service.cli.main import main

raise SystemExit(main())
