"""``python -m app.cli``: the same entry point as the ``c2s-api`` console script."""

from app.cli import main

raise SystemExit(main())
