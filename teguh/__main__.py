"""``python -m teguh``: the ``teguh`` command."""

from __future__ import annotations

from teguh.cli import main

raise SystemExit(main())
