"""`python -m fuscore ...` is the `fuscore` command (also under `torchrun` / `accelerate launch -m fuscore`)."""

import sys

from fuscore.cli import main


if __name__ == "__main__":
    sys.exit(main())
