"""``python -m surerank`` runs the command line."""

from surerank.cli import main

raise SystemExit(main())
