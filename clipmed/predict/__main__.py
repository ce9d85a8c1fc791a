"""python -m clipmed.predict: see clipmed/predict/cli.py."""

import sys

from clipmed import console
from clipmed.predict.cli import main

# Library chatter hidden, as in clipmed.main (CLIPMED_VERBOSE=1 shows it). Here, not in main():
# it changes the process's logging handlers, which a caller of main() (a notebook, the tests)
# keeps.
console.setup_logging()
sys.exit(main())
