"""``python -m bridge`` runs the command line (see :mod:`bridge.cli`)."""

from bridge.cli import main

raise SystemExit(main())
