"""Populations: K networks of the same sizes, stored stacked and trained in lockstep by network.py's functions.

    stack.py     Population: weights[k] (K, n_{k+1}, n_k), the checked one-update API, member(i) as an MLP
    trainer.py   PopulationTrainer: each member as a Trainer would train it; engines eager, compiled, cuda_graph
    epoch.py     EpochFunction: one epoch of every member as one function of tensors, what every engine runs
    history.py   PopulationHistory: the per-epoch record of every member, and each member's own History
    logger.py    PopulationLogger: TensorBoard curves per group of members and per member
    sharding.py  member_shard, gather_population_history: members split over torchrun ranks, gathered on rank 0

Sample orders come from modes.py (``EpochOrders``, one generator per member).
"""

from .history import PopulationHistory
from .logger import PopulationLogger
from .stack import POPULATION_ULPS, Population
from .trainer import COMPILED_MAX_UPDATES, ENGINES, PopulationTrainer

__all__ = ["Population", "PopulationTrainer", "PopulationHistory", "PopulationLogger",
           "ENGINES", "COMPILED_MAX_UPDATES", "POPULATION_ULPS"]
