"""Training, evaluation and prediction (imports data, models, losses and metrics)."""

from nextvlad.training.evaluate import (
    evaluate,
    iter_predictions,
    read_vocabulary,
    write_predictions,
)
from nextvlad.training.loop import TrainingError, learning_rate, train
from nextvlad.training.options import TrainOptions
from nextvlad.training.state import latest_checkpoint, load_for_inference

__all__ = [
    "TrainOptions",
    "TrainingError",
    "evaluate",
    "iter_predictions",
    "latest_checkpoint",
    "learning_rate",
    "load_for_inference",
    "read_vocabulary",
    "train",
    "write_predictions",
]
