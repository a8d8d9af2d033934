"""``python benchmarks/reproduce [--quick] ...`` (from any folder); see the package's docstring."""

import sys
from pathlib import Path

if __package__:  # python -m benchmarks.reproduce (from the repository root)
    from .cli import main
else:  # python benchmarks/reproduce: import this folder as the package `reproduce`
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))  # benchmarks/
    from reproduce.cli import main

if __name__ == "__main__":
    sys.exit(main())
