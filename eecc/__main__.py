import sys

from eecc.cli import main

sys.exit(main())
