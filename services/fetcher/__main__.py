"""``python -m services.fetcher``: the fetcher program (services/fetcher/__init__.py)."""

import sys

from services.fetcher import main

sys.exit(main())
