import sys

from fedkube.cli.main import main

sys.exit(main())
