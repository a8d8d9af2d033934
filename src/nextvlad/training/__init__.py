"""Training, evaluation and prediction (imports data, models, losses and metrics).

``step`` is the training step (``TrainStep``), ``loop`` the run around it (``train``),
``options`` the options of a run, ``state`` and ``run_folder`` the checkpoints and the run
folder, ``distributed`` the processes of a torchrun launch, ``evaluate`` evaluation and
predictions.
"""

from nextvlad.training.evaluate import (
    evaluate,
    iter_predictions,
    read_vocabulary,
    write_predictions,
)
from nextvlad.training.loop import train
from nextvlad.training.options import TrainOptions
from nextvlad.training.run_folder import TrainingError
from nextvlad.training.state import latest_checkpoint, load_for_inference
from nextvlad.training.step import Recipe, TrainStep, clip_each_gradient

__all__ = [
    "Recipe",
    "TrainOptions",
    "TrainStep",
    "TrainingError",
    "clip_each_gradient",
    "evaluate",
    "iter_predictions",
    "latest_checkpoint",
    "load_for_inference",
    "read_vocabulary",
    "train",
    "write_predictions",
]
