"""`python -m nextvlad ...` is the same as the `nextvlad` command (used by torchrun)."""

from nextvlad.cli import run

raise SystemExit(run())
