"""What binds a population engine to what it runs (issue 22, items 9 and 10), on the CPU.

- The compiled engine: Dynamo keeps at most ``recompile_limit`` (8) graphs per code object and then runs the
  function eagerly, saying nothing to the caller; the 9th compiled population of a process was run uncompiled and
  reported as compiled. Each population now compiles its own code object, and a hit limit is one clear line.
- The CUDA graph: its cache key must name every tensor the captured graph reads, the evaluation splits included,
  or a replay reads data that is no longer the trainer's.
"""

import shutil

import pytest
import torch

from manual_backprop.datasets import load_dataset
from manual_backprop.population import POPULATION_ULPS, Population, PopulationTrainer

F64 = torch.float64
needs_cxx = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                               reason="torch.compile on the CPU needs a C++ compiler")


def _xor_trainer(hidden, engine, epochs=3, lr=(0.5, 2.0)):
    pop = Population([2, hidden, 1], activation="tanh", output_activation="identity", seeds=[0, 1], dtype=F64)
    return pop, PopulationTrainer(pop, load_dataset("xor", dtype=F64), mode="batch", lr=list(lr), epochs=epochs,
                                  engine=engine)


@needs_cxx
def test_nine_compiled_configurations_in_one_process_are_all_compiled_and_give_the_eager_numbers():
    from torch._dynamo.utils import counters

    limit = torch._dynamo.config.recompile_limit
    for hidden in range(1, limit + 3):  # past Dynamo's limit of graphs per code object
        compiled_before = counters["frames"]["ok"]
        # one epoch, one batch update: the claim is per update (member 1's lr = 2 diverges within three epochs,
        # where the two engines' last-bit differences grow past any per-update bound: a whole run is no proof)
        pop_c, trainer = _xor_trainer(hidden, "compiled", epochs=1)
        trainer.run()
        assert counters["frames"]["ok"] == compiled_before + 1, \
            f"configuration {hidden} (hidden width {hidden}) was not compiled: Dynamo fell back to eager"
        pop_e, eager = _xor_trainer(hidden, "eager", epochs=1)
        eager.run()
        for k, (a, b) in enumerate(zip(pop_c.parameters(), pop_e.parameters())):
            scale = b.abs().max().item()
            miss = (a - b).abs().max().item() / (torch.finfo(F64).eps * scale)
            assert miss <= POPULATION_ULPS, f"configuration {hidden}, parameter {k}: {miss:.1f} ulps"


@needs_cxx
def test_a_hit_recompile_limit_is_one_clear_line_not_a_silent_eager_run():
    _, trainer = _xor_trainer(2, "compiled")
    with torch._dynamo.config.patch(recompile_limit=0):  # no graph may be added: the limit is hit at once
        with pytest.raises(RuntimeError, match=r"engine 'compiled': torch.compile hit Dynamo's recompile_limit"):
            trainer.run()


def test_the_graph_key_names_the_evaluation_data_the_graph_reads():
    _, trainer = _xor_trainer(2, "eager")
    xs, ys = trainer._next_epoch_data()
    key = trainer._graph_key(xs, ys)
    assert trainer._graph_key(xs, ys) == key, "the key of the same tensors is the same"
    x, y, labels = trainer._fn.evals["train"]
    trainer._fn.evals["train"] = (x.clone(), y, labels)  # the same shape and values, another tensor
    assert trainer._graph_key(xs, ys) != key, "a graph captured on the old evaluation data would read it still"
    trainer._fn.evals["train"] = (x, y, labels)
    assert trainer._graph_key(xs, ys) == key
    trainer._fn.lr = trainer._fn.lr.clone()  # the learning rates are read by the graph too
    assert trainer._graph_key(xs, ys) != key


def test_the_graph_key_names_the_inputs_batch_mode_reads_in_place():
    _, trainer = _xor_trainer(2, "eager")
    xs, ys = trainer._next_epoch_data()
    key = trainer._graph_key(xs, ys)
    assert trainer._graph_key(xs.clone(), ys) != key, "batch mode's graph reads the training set in place"


@pytest.mark.parametrize("change", ["fewer members", "other sizes", "neg bit"])
def test_the_c_engine_refuses_parameters_it_cannot_write_and_writes_nothing(change):
    """The C engine writes K members of the population's shapes through each parameter's address: a parameter
    given another shape between runs (``.data =``) had it write past the tensor's memory (the heap was corrupted);
    a neg-bit view had it read -W as W. Now the run is refused by name and nothing is written."""
    pop = Population([2, 2, 1], seeds=[0, 1, 2, 3], dtype=F64)
    trainer = PopulationTrainer(pop, load_dataset("xor", dtype=F64), mode="online", lr=0.5, epochs=3, engine="c")
    trainer.run()
    new = {"fewer members": torch.zeros(3, 2, 2, dtype=F64), "other sizes": torch.zeros(4, 2, 3, dtype=F64),
           "neg bit": torch._neg_view(torch.ones(4, 2, 2, dtype=F64))}[change]
    pop.weights[0].data = new
    before = [t.clone() for t in (*pop.weights, *pop.biases)]
    trainer.epochs = 6
    message = "contiguous CPU tensors" if change == "neg bit" else r"weights\[0\] must have shape \(4, 2, 2\)"
    with pytest.raises(ValueError, match=message):
        trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before, (*pop.weights, *pop.biases)))
    assert trainer.epoch == 3


CHANGES = {
    "x_train .data": lambda tr, pop: setattr(tr.x_train, "data", torch.zeros(1, 2, dtype=F64)),
    "x_train set_": lambda tr, pop: tr.x_train.set_(torch.zeros(1, 2, dtype=F64)),
    "y_train .data": lambda tr, pop: setattr(tr.y_train, "data", torch.zeros(1, 1, dtype=F64)),
    "lr .data": lambda tr, pop: setattr(tr.lr, "data", torch.zeros(1, dtype=F64)),
    "active replaced": lambda tr, pop: setattr(tr, "active", torch.ones(1, dtype=torch.bool)),
    "a bias removed": lambda tr, pop: pop.biases.pop(),
    "bias flag": lambda tr, pop: setattr(pop, "bias", False),
}


@pytest.mark.parametrize("hidden", [2, 3], ids=["fused-kernel", "general-kernel"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_the_c_engine_refuses_data_masks_and_layers_changed_between_runs(change, hidden):
    """The C engine's plan points into the trainer's data, rates and mask, and reads the layers its plan names: a
    ``.data =`` or ``set_`` on one of them, a replaced mask or a removed bias between runs had it read freed memory,
    overflow the mask or load through NULL (a red-team finding, ASAN). Now each is refused by name before the call."""
    pop = Population([2, hidden, 1], seeds=[0, 1, 2, 3], dtype=F64)
    trainer = PopulationTrainer(pop, load_dataset("xor", dtype=F64), mode="online", lr=0.5, epochs=3, engine="c")
    trainer.run()
    before = [t.clone() for t in (*pop.weights, *pop.biases)]
    CHANGES[change](trainer, pop)
    trainer.epochs = 6
    with pytest.raises(ValueError, match="between runs of the C engine|active mask"):
        trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(before, (*pop.weights, *pop.biases)))
    assert trainer.epoch == 3
