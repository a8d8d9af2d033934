"""Reading a run's TensorBoard events back with tensorboard's own reader (a dev extra)."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def tensorboard_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value), ...] of the scalars in ``logdir`` (an event file, or a folder
    such as ``RUN/tensorboard`` with one event file a run and resume), as TensorBoard sees
    them: every event kept, but those a resumed run logs again (from the START of its file's
    session on) in place of the earlier ones."""
    events = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }
