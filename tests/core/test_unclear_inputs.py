"""Inputs that once failed silently or deep inside torch (issue 20): each is refused at the public edge with one
line that names the argument, what was expected and what was got."""

import re

import numpy as np
import pytest
import torch

from manual_backprop.datasets import load_csv, load_npz
from manual_backprop.network import MLP
from manual_backprop.optim import SGD, Adam, AdamW
from manual_backprop.quantities import per_sample_gradients


def test_softmax_on_one_output_is_refused_where_the_network_is_built():
    with pytest.raises(ValueError, match="output_activation 'softmax' on a single output is always 1"):
        MLP([2, 4, 1], output_activation="softmax")
    MLP([2, 4, 2], output_activation="softmax")  # two outputs are a distribution


def test_an_lr_beyond_the_dtype_is_refused_by_step():
    net = MLP([2, 3, 1], dtype=torch.float32, seed=0)
    x, y = torch.zeros(4, 2), torch.zeros(4, 1)
    _, grads = net.loss_and_grads(x, y, "squared_error")
    before = [p.clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=r"lr=1e\+308 does not fit the network's dtype torch.float32"):
        net.step(grads, lr=1e308)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    wide = MLP([2, 3, 1], dtype=torch.float64, seed=0)
    wide.step(wide.loss_and_grads(x.double(), y.double(), "squared_error")[1], lr=1e308)  # fits float64


@pytest.mark.parametrize("make,label", [
    (lambda net: SGD(net, lr=1e308), "lr=1e+308"),
    (lambda net: SGD(net, lr=0.1, momentum=0.5, weight_decay=1e300), "weight_decay=1e+300"),
    (lambda net: Adam(net, lr=0.1, weight_decay=1e308), "weight_decay=1e+308"),
    (lambda net: AdamW(net, lr=1e300), "lr=1e+300"),
])
def test_optimizer_settings_beyond_the_dtype_are_refused(make, label):
    net = MLP([2, 3, 1], dtype=torch.float32, seed=0)
    with pytest.raises(ValueError, match=re.escape(f"{label} does not fit the network's dtype torch.float32")):
        make(net)


def test_per_sample_gradients_of_no_network_names_the_argument():
    with pytest.raises(TypeError, match="net must be a manual_backprop MLP or Population, but got NoneType"):
        per_sample_gradients(None, torch.zeros(4, 2), torch.zeros(4, 1))


def test_an_npz_whose_header_claims_terabytes_is_refused_by_name(tmp_path):
    """A 1 KB file whose .npy header says (2**38, 3) float64 (6 TiB): refused from the header, nothing allocated."""
    import zipfile

    path = tmp_path / "huge.npz"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 3)))
    header["shape"] = (2 ** 38, 3)
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(np.zeros(3).tobytes())
        with zf.open("y.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros(4))
    with pytest.raises(ValueError, match=r"huge.npz, array 'x': its header claims shape \(274877906944, 3\) float64 "
                                         r"\(6\.0 TiB\), but the file holds 24 bytes of data"):
        load_npz(path)


def test_a_file_of_nul_bytes_is_refused_before_it_is_read_whole(tmp_path):
    """A CSV loader reads text; NUL bytes mean a binary file, refused from the first chunk."""
    path = tmp_path / "zeros.csv"
    with open(path, "wb") as f:
        f.truncate(64 * 2 ** 20)  # 64 MiB of NUL bytes, sparse on disk
    with pytest.raises(ValueError, match=r"zeros.csv is not a text CSV file: it holds NUL bytes \(the first at byte "
                                         r"0\)"):
        load_csv(path)
