import sys

from hwnas.cli.commands import main

sys.exit(main())
