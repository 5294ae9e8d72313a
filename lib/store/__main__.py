"""``python -m lib.store``: the model store's command (``lib.store.cli``)."""

import sys

from lib.store.cli import main

sys.exit(main())
