"""``python -m visionkit.cli ...``: the same as the ``visionkit`` command."""

import sys

from visionkit.cli import main

sys.exit(main())
