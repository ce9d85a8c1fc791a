"""`python -m clipmed.benchmark`: see clipmed/benchmark/__init__.py."""

from clipmed.benchmark import main

main()
