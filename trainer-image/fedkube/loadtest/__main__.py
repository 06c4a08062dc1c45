import sys

from fedkube.loadtest.sites import main

sys.exit(main())
