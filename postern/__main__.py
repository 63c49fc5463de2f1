import sys

from postern.cli import main

sys.exit(main())
