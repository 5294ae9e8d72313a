"""``python -m lib.spark IN OUT``: the Spark job (``lib.spark.job``)."""

import sys

from lib.spark.job import main

sys.exit(main())
