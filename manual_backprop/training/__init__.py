"""Training: the Trainer runs the lecture's learning modes over a network and records a History.

The package holds the Trainer's epoch loop (the updates of one learning mode, the evaluation, the divergence and
target rules), what every trainer shares around its epochs, what a run records (History, the target encoding,
accuracy), and how a Trainer saves and resumes itself exactly.
"""

from ..modes import MODES
from .history import Diverged, History, accuracy, encode_for
from .trainer import Trainer, train

__all__ = ["MODES", "Trainer", "train", "History", "Diverged", "encode_for", "accuracy"]
