"""``python -m eeca`` is the ``eeca`` command."""

from eeca.cli import main

raise SystemExit(main())
