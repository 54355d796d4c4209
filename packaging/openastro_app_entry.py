"""PyInstaller entry script for the frozen volunteer app (see packaging/openastro_app.spec).

Imports nothing but ``app.main``: numpy must not be imported before ``app.main`` has capped the
BLAS/OpenMP threads.
"""

import sys

from app.main import main

if __name__ == "__main__":
    sys.exit(main())
