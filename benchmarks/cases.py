"""The benchmark's cases (one network, loss and batch size each), their data and sample order, and the interface
every implementation of a case's update has (``Impl``). The implementations: manual.py and peers.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from manual_backprop.losses import SquaredError, get_loss


@dataclass
class Case:
    name: str
    sizes: list  # layer widths
    activation: str  # hidden f
    output_activation: str
    loss: str
    batch: int  # samples per update (1: online)
    data: str  # "xor", "digits" or "synthetic"
    lr: float
    repeats: int  # interleaved repeats (measurements per implementation)
    c_chunk: int = 0  # updates per call of the C loop (0: one epoch of the data, as the Trainer calls it)
    note: str = ""


CASES = {
    "online_tiny": Case("online_tiny", [2, 2, 1], "sigmoid", "sigmoid", "squared_error", 1, "xor", 0.5, 41,
                        note="the lecture's XOR net, one sample per update"),
    "online_small": Case("online_small", [64, 30, 10], "tanh", "softmax", "cross_entropy", 1, "digits", 0.02, 31,
                         note="8x8 digits, one sample per update"),
    "minibatch_small": Case("minibatch_small", [64, 30, 10], "sigmoid", "sigmoid", "squared_error", 10, "digits",
                            3.0, 31, note="Nielsen's setting (sigmoid, quadratic cost, b = 10, eta = 3) on the digits"),
    "minibatch_mnist": Case("minibatch_mnist", [784, 30, 10], "sigmoid", "sigmoid", "squared_error", 10, "synthetic",
                            3.0, 31, note="Nielsen's MNIST network (sigmoid, quadratic cost, b = 10, eta = 3) on "
                                          "MNIST-shaped random data"),
    "medium": Case("medium", [784, 256, 256, 10], "relu", "softmax", "cross_entropy", 128, "synthetic", 0.01, 21,
                   note="MNIST-shaped random data"),
    "large": Case("large", [1024, 2048, 2048, 1024], "tanh", "identity", "squared_error", 512, "synthetic", 1e-4, 15,
                  note="random regression data"),
}
# --quick: the same code paths in seconds (the large and medium nets shrunk, few repeats).
QUICK_SIZES = {"medium": ([196, 64, 64, 10], 32), "large": ([128, 256, 256, 128], 64)}


def case_data(case: Case, dtype: torch.dtype, device: torch.device, seed: int, n_synthetic: int):
    """(x, y, note): x (N, n_0), y (N, n_L) in the form the Trainer keeps (one-hot rows for cross-entropy)."""
    n_in, n_out = case.sizes[0], case.sizes[-1]
    note = ""
    x = y = None
    if case.data in ("xor", "digits"):
        try:
            from manual_backprop.datasets import load_dataset

            ds = load_dataset(case.data, seed=seed, dtype=torch.float64)
            x, labels = ds.x_train, ds.y_train
            if x.shape[1] != n_in:
                raise ValueError(f"{case.data} has {x.shape[1]} features, the case wants {n_in}")
            y = labels.double().unsqueeze(1) if n_out == 1 else torch.nn.functional.one_hot(labels, n_out).double()
        except (ImportError, ModuleNotFoundError) as err:
            note = f"{case.data} unavailable ({err}); random data of the same shape instead"
            x = None
    if x is None:
        g = torch.Generator().manual_seed(seed)
        n = 4 if case.data == "xor" else n_synthetic
        x = torch.randn(n, n_in, generator=g, dtype=torch.float64)
        if isinstance(get_loss(case.loss), SquaredError) and case.output_activation == "identity":
            y = torch.randn(n, n_out, generator=g, dtype=torch.float64)
        else:
            y = torch.nn.functional.one_hot(torch.randint(0, n_out, (n,), generator=g), n_out).double()
    return x.to(device=device, dtype=dtype).contiguous(), y.to(device=device, dtype=dtype).contiguous(), note


def sample_order(n: int, batch: int, count: int, seed: int) -> torch.Tensor:
    """Indices of ``count`` updates of ``batch`` samples: shuffled epochs back to back, each batch sorted."""
    g = torch.Generator().manual_seed(seed + 1)
    per_epoch = n // batch
    epochs = -(-count // per_epoch)
    perms = torch.rand(epochs, n, generator=g).argsort(dim=1)[:, :per_epoch * batch]
    return perms.reshape(epochs, per_epoch, batch).sort(dim=2).values.reshape(-1)[:count * batch].contiguous()


class Impl:
    """One implementation of the case's update. ``run(u0, n)`` makes updates u0 .. u0 + n - 1 of the order."""

    name = ""
    chunk_note = ""

    def run(self, u0: int, n: int) -> None:
        raise NotImplementedError

    def kept_bytes(self) -> Optional[int]:
        return None

    def final_loss(self) -> Optional[float]:
        return None
