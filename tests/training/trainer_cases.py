"""What the Trainer's tests share (test_training.py, test_trainer_checkpoints.py, test_trainer_arguments.py): the
moons data set (each module makes it its module-scoped fixture ``moons``) and a fresh tanh/softmax network."""

import torch

from manual_backprop import MLP
from manual_backprop.datasets import load_dataset

F64 = torch.float64


def moons_data():
    return load_dataset("moons", n_samples=60, noise=0.2, seed=0, dtype=F64)


def fresh(seed=0, device="cpu", sizes=(2, 6, 2), dtype=F64):
    return MLP(list(sizes), activation="tanh", output_activation="softmax", bias_init="uniform", dtype=dtype,
               device=device, seed=seed)


def params(net):
    return [p.clone() for p in net.parameters()]
