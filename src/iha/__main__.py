import sys

from iha.cli import main

sys.exit(main())
