"""`python -m fastsoftmax`: the same command as the `fastsoftmax` console script."""
import sys

from fastsoftmax.cli import main

sys.exit(main())
