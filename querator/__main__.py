import sys

from querator.cli import main

sys.exit(main())
