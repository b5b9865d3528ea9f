"""`python -m localplatform.demo up|down|status|send|scores` (see localplatform.demo.cli)."""

import sys

from localplatform.demo.cli import main

sys.exit(main())
