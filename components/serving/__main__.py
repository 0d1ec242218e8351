"""``python -m components.serving serve|stack ...``: the serving commands without the main CLI."""

import sys

from components.serving.cli import main

sys.exit(main())
