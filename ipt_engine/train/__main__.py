"""``python -m ipt_engine.train CONFIG.yaml [key=value ...]`` — also what ``composer -n GPUS -m`` runs.

Composer's launcher starts one such process per GPU with the rank variables set; each builds the same
config and joins the process group inside :func:`ipt_engine.train.main.train`.
"""

import sys

from ipt_engine.errors import UserError
from ipt_engine.train.main import main

try:
    sys.exit(main(sys.argv[1:]))
except UserError as e:
    print(f"ipt train: error: {e}", file=sys.stderr)
    sys.exit(2)
