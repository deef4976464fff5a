import sys

from ipt_engine.cli import main

sys.exit(main())
