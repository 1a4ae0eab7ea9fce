"""`python -m proxy` is the `tuned-proxy` command."""

import sys

from proxy.cli import main

sys.exit(main())
