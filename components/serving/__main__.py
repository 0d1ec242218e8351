"""``python -m components.serving serve|stack ...``: the serving commands without the main CLI."""

import sys

from components.cli.serve import main

sys.exit(main())
