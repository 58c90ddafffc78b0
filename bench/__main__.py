"""``python -m bench``: the benchmark runner (see ``bench/README.md``)."""

from __future__ import annotations

from bench.load.runner import main

raise SystemExit(main())
