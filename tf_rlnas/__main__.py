import sys

from tf_rlnas.cli import main

sys.exit(main())
