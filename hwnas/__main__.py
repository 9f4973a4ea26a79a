import sys

from hwnas.pipeline.cli import main

sys.exit(main())
