"""Training, evaluation and prediction (imports data, models, losses and metrics).

The engine: ``step`` is the training step (``TrainStep``, ``build_step``), ``optim`` its
Adam, ``batches`` a batch on the device. Around it: ``loop`` the run (``train``), ``options``
the options of a run, ``inputs`` its datasets and loaders, ``resume`` a run's start or resume,
``report`` its log lines and TensorBoard scalars (written by ``events``), ``progress`` the
progress bar, ``signals`` SIGINT/SIGTERM, ``distributed`` the processes of a torchrun launch.
Checkpoints: ``state`` the trainer state and its save and restore, ``serialize`` optimizer and
RNG state as tensors, ``run_folder`` the run folder's layout and pruning, ``config_diff`` the
refusal to resume into another model. ``evaluate``: evaluation and predictions.
"""

from nextvlad.checkpoint import latest_checkpoint
from nextvlad.training.evaluate import (
    evaluate,
    iter_predictions,
    read_vocabulary,
    write_predictions,
)
from nextvlad.training.loop import train
from nextvlad.training.options import TrainOptions
from nextvlad.training.run_folder import TrainingError
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
    "read_vocabulary",
    "train",
    "write_predictions",
]
