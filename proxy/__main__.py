import sys

from postern.proxy.cli import main

sys.exit(main())
