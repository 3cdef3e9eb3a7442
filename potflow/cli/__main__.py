"""``python -m potflow.cli``: the ``potflow`` command (torchrun starts its processes so)."""

import sys

from potflow.cli import main

sys.exit(main())
