"""What several subcommands share: argument types and the evaluation-data loader."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nextvlad._args import positive_int

__all__ = ["evaluation_loader", "positive_int"]


def evaluation_loader(
    patterns: Sequence[str],
    config: Any,
    *,
    batch_size: int,
    num_workers: int,
    skip_corrupt: bool,
    what: str,
) -> Any:
    """A loader over the files of ``patterns`` (one pass, in order) for a model of ``config``;
    ``what`` names the data in errors ("the data", "--eval-data")."""
    from nextvlad.data import VideoDataset, detect_schema, resolve_files
    from nextvlad.errors import ConfigError
    from nextvlad.training.inputs import check_data_fits

    files = resolve_files(patterns)
    schema = detect_schema(files, skip_corrupt=skip_corrupt)
    if schema is None:  # the files' content, not the command line: exit 1
        raise ConfigError(f"no record in {what} ({' '.join(patterns)}) shows a known schema")
    check_data_fits(config, schema, what)
    dataset = VideoDataset(
        files,
        schema=schema,
        num_classes=config.num_classes,
        skip_corrupt=skip_corrupt,
        rank=0,
        world_size=1,
    )
    return dataset.loader(batch_size, num_workers=num_workers)
