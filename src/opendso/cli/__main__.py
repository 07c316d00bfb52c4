"""``python -m opendso.cli``: the ``opendso`` command."""

import sys

from opendso.cli import main

sys.exit(main())
