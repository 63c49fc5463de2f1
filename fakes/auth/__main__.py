import sys

from postern.fakes.auth.cli import main

sys.exit(main())
