import sys

from floorguard.cli import main

sys.exit(main())
