"""Run the unmem command line with every model loaded in float64 (tests/test_distributed.py).

python tests/float64_cli.py unmem-arguments...
"""

from __future__ import annotations

import sys

from float_bounds import float64_loading

if __name__ == "__main__":
    from unmem import models
    from unmem.cli import app

    models._from_pretrained = float64_loading(models._from_pretrained)
    app(sys.argv[1:], prog_name="unmem")
