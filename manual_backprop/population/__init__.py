"""Populations: K networks of the same sizes, stored stacked and trained in lockstep by network.py's functions.

The package holds the stacked network (``Population``: weights[k] (K, n_{k+1}, n_k), member(i) as an MLP), its
trainer (``PopulationTrainer``, each member as a Trainer would train it, with its engines and the one epoch they
run), what a run records (``PopulationHistory``) and logs (``PopulationLogger``), and the split of members over
torchrun ranks.

Sample orders come from modes.py (``EpochOrders``, one generator per member).
"""

from .history import PopulationHistory
from .logger import PopulationLogger
from .stack import POPULATION_ULPS, Population
from .trainer import COMPILED_MAX_UPDATES, ENGINES, PopulationTrainer

__all__ = ["Population", "PopulationTrainer", "PopulationHistory", "PopulationLogger",
           "ENGINES", "COMPILED_MAX_UPDATES", "POPULATION_ULPS"]
