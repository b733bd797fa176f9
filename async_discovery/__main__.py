"""``python -m async_discovery`` is the ``async-discovery`` command."""

from .cli import main

raise SystemExit(main())
