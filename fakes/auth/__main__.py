import sys

from fakes.auth.cli import main

sys.exit(main())
