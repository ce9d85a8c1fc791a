"""python -m clipmed.predict: see clipmed/predict/cli.py."""

import sys

from clipmed.predict.cli import main

sys.exit(main())
