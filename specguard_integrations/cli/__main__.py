"""`python -m specguard_integrations.cli`: the `specguard` command."""

import sys

from .main import main

sys.exit(main())
