"""``python -m llmdefinitions``: see :mod:`llmdefinitions.cli`."""
import sys

from .cli import main

sys.exit(main())
