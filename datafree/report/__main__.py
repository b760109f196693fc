"""``python -m datafree.report``: see :mod:`datafree.report.cli`."""
from datafree.report.cli import main

raise SystemExit(main())
