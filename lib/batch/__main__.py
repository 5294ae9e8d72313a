"""``python -m lib.batch IN -o OUT``: the file command (``lib.batch.command``)."""

import sys

from lib.batch.command import main

sys.exit(main())
