import sys

from nanochat.commands import main

sys.exit(main())
