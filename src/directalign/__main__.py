"""`python -m directalign COMMAND ...`, the form launchers take (torchrun, accelerate launch)."""

import sys

from directalign.cli.main import main

sys.exit(main())
