"""``python -m captum_robust.cli``, the same program as ``captum-robust``."""

import sys

from captum_robust.cli import main

sys.exit(main())
