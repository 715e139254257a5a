"""``python -m onward``: the same as the ``onward`` command."""

from onward.cli.main import main

raise SystemExit(main())
