import sys

from medsci.cli import main

sys.exit(main())
