"""`python -m wml_localplatform.demo up|down|status|send|scores` (see wml_localplatform.demo.cli)."""

import sys

from wml_localplatform.demo.cli import main

sys.exit(main())
