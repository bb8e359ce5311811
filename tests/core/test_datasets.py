"""Datasets: every named set has the promised shapes and labels, is seeded, splits and standardizes honestly, and
the user's files are read with errors that name the file, the line and the column."""

from __future__ import annotations

import importlib.util
import random
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manual_backprop.datasets import (
    DATASETS, Dataset, encode_targets, load_csv, load_dataset, load_npz, standardize, train_test_split,
)

# (n_features, num_classes) of each named set; mnist1d is kept small so the file stays fast.
EXPECTED = {
    "xor": (2, 2), "and": (2, 2), "or": (2, 2), "xor_noisy": (2, 2), "moons": (2, 2), "circles": (2, 2),
    "spirals": (2, 2), "blobs": (2, 3), "digits": (64, 10), "mnist1d": (40, 10),
}
SMALL = {"mnist1d": {"n_samples": 200}}
GATES = ("xor", "and", "or")
RANDOM = tuple(n for n in DATASETS if n not in GATES)


def assert_close(actual, expected, atol=1e-6):
    """Shape, then dtype, then values (torch.testing.assert_close costs seconds of imports on its first call)."""
    assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
    diff = (actual - expected).abs().max().item() if actual.numel() else 0.0
    assert diff <= atol, f"max |difference| {diff:.3e} > {atol:.0e}"


# mnist1d is an optional package (the GPU machine has none): its tests skip where it is missing, never fail.
HAS_MNIST1D = importlib.util.find_spec("mnist1d") is not None


def small(name, **kwargs):
    if name == "mnist1d" and not HAS_MNIST1D:
        pytest.skip("the optional mnist1d package is not installed")
    return load_dataset(name, **{**SMALL.get(name, {}), **kwargs})


def test_every_name_is_covered():
    assert set(DATASETS) == set(EXPECTED)


# ---------------------------------------------------------------------------------------------------- named sets
@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_classes(name, dtype):
    ds = small(name, dtype=dtype)
    n_features, num_classes = EXPECTED[name]
    assert isinstance(ds, Dataset) and ds.name == name
    assert ds.n_features == n_features and ds.num_classes == num_classes and ds.is_classification
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.dim() == 2 and x.shape[1] == n_features and x.shape[0] > 0, f"{split}: x shape {tuple(x.shape)}"
        assert x.dtype == dtype and y.dtype == torch.int64 and y.shape == (x.shape[0],)
        assert torch.isfinite(x).all()
        assert 0 <= int(y.min()) and int(y.max()) < num_classes
    assert set(ds.y_train.tolist()) == set(range(num_classes)), "every class must appear in the training split"


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_tensors_other_seed_different(name):
    a, b, c = small(name, seed=3), small(name, seed=3), small(name, seed=4)
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, field), getattr(b, field)), f"{field} differs for the same seed"
    assert not torch.equal(a.x_train, c.x_train), "another seed must give another dataset"


@pytest.mark.parametrize(
    "name, labels", [("xor", [0, 1, 1, 0]), ("and", [0, 0, 0, 1]), ("or", [0, 1, 1, 1])]
)
def test_logic_gates_are_the_four_points_and_test_is_train(name, labels):
    ds = load_dataset(name, seed=7, noise=0.5, n_samples=100)          # noise and n_samples do not apply
    points = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert torch.equal(ds.x_train, points), "logic gates keep 0/1 inputs (not standardized by default)"
    assert ds.y_train.tolist() == labels
    assert torch.equal(ds.x_test, ds.x_train) and torch.equal(ds.y_test, ds.y_train)
    assert ds.info["standardized"] is False
    assert ds.targets("train", "binary").squeeze(1).tolist() == [float(v) for v in labels]


def test_logic_gate_can_be_standardized_on_request():
    ds = load_dataset("xor", standardize=True)
    assert torch.equal(ds.x_train, torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]]))


def test_noise_changes_the_synthetic_points():
    exact = load_dataset("moons", noise=0.0, standardize=False, dtype=torch.float64)
    x, y = exact.x_train, exact.y_train
    outer = x[y == 0]
    inner = x[y == 1] - torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert_close(outer.norm(dim=1), torch.ones(len(outer), dtype=torch.float64))
    assert_close(inner.norm(dim=1), torch.ones(len(inner), dtype=torch.float64))
    noisy = load_dataset("moons", noise=0.3, standardize=False, dtype=torch.float64)
    assert (noisy.x_train[noisy.y_train == 0].norm(dim=1) - 1).abs().max() > 0.1


def test_sizes_and_options():
    ds = load_dataset("blobs", n_samples=120, num_classes=4, n_features=5, test_fraction=0.5)
    assert ds.num_classes == 4 and ds.n_features == 5
    assert ds.x_train.shape[0] == 60 and ds.x_test.shape[0] == 60
    assert torch.bincount(ds.y_test).tolist() == [15, 15, 15, 15], "the split is stratified"
    digits = load_dataset("digits", n_samples=200)
    assert digits.x_train.shape[0] + digits.x_test.shape[0] == 200
    assert load_dataset("circles", factor=0.3).info["factor"] == 0.3


# ---------------------------------------------------------------------------------------------------- mnist1d
def test_mnist1d_is_the_packages_make_dataset_and_restores_global_rngs():
    mnist1d = pytest.importorskip("mnist1d.data", reason="the optional mnist1d package is not installed")

    np.random.seed(123)
    random.seed(123)
    ds = load_dataset("mnist1d", n_samples=100, seed=3, test_fraction=0.2, standardize=False, dtype=torch.float64)
    assert np.random.randint(1 << 30) == np.random.RandomState(123).randint(1 << 30), "numpy's global state moved"
    assert random.random() == random.Random(123).random(), "Python's global random state moved"
    args = mnist1d.get_dataset_args()
    args.num_samples, args.seed = 100, 3
    ref = mnist1d.make_dataset(args)
    np.testing.assert_array_equal(ds.x_train.numpy(), ref["x"])
    np.testing.assert_array_equal(ds.x_test.numpy(), ref["x_test"])
    np.testing.assert_array_equal(ds.y_test.numpy(), ref["y_test"])


def test_mnist1d_size_must_be_a_multiple_of_ten():
    with pytest.raises(ValueError, match=r"n_samples must be a multiple of 10 .* got 205"):
        load_dataset("mnist1d", n_samples=205)


# ---------------------------------------------------------------------------------------------------- split/standardize
def test_standardization_uses_training_statistics_only():
    raw = load_dataset("blobs", n_samples=200, seed=1, standardize=False, dtype=torch.float64)
    ds = load_dataset("blobs", n_samples=200, seed=1, dtype=torch.float64)
    mean, std = raw.x_train.mean(0), raw.x_train.std(0, correction=0)
    assert_close(torch.tensor(ds.info["mean"], dtype=torch.float64), mean)
    assert_close(torch.tensor(ds.info["std"], dtype=torch.float64), std)
    assert_close(ds.x_test, (raw.x_test - mean) / std)
    assert_close(ds.x_train.mean(0), torch.zeros(2, dtype=torch.float64))
    assert_close(ds.x_train.std(0, correction=0), torch.ones(2, dtype=torch.float64))
    assert ds.x_test.mean(0).abs().max() > 1e-6, "the test mean must not be forced to 0"


def test_constant_feature_becomes_zero_not_nan():
    x_train = torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    x_test = torch.tensor([[4.0, 5.0], [0.0, 7.0]])
    x_tr, x_te, mean, std = standardize(x_train, x_test)
    assert torch.isfinite(x_tr).all() and torch.isfinite(x_te).all()
    assert torch.equal(x_tr[:, 1], torch.zeros(3)) and std[1] == 1
    assert_close(x_te[:, 1], torch.tensor([0.0, 2.0]))


def test_split_is_a_seeded_stratified_partition():
    x = torch.arange(100, dtype=torch.float64).unsqueeze(1)
    y = (torch.arange(100) % 4 == 0).long()                              # 25 ones, 75 zeros
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, 0.2, seed=5)
    assert len(x_te) == 20 and torch.bincount(y_te).tolist() == [15, 5]
    assert sorted(torch.cat([x_tr, x_te]).squeeze(1).tolist()) == list(range(100))
    assert torch.equal(y_tr, y[x_tr.squeeze(1).long()]), "rows of x and y must move together"
    again = train_test_split(x, y, 0.2, seed=5)
    assert all(torch.equal(a, b) for a, b in zip((x_tr, y_tr, x_te, y_te), again))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), fraction=st.floats(0.01, 0.99), classes=st.integers(1, 5), seed=st.integers(0, 99))
def test_split_never_loses_rows_or_leaves_a_split_empty(n, fraction, classes, seed):
    x = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    y = torch.arange(n) % classes
    x_tr, y_tr, x_te, y_te = train_test_split(x, y, fraction, seed)
    assert len(x_tr) >= 1 and len(x_te) >= 1
    assert sorted(torch.cat([x_tr, x_te]).squeeze(1).long().tolist()) == list(range(n))


# ---------------------------------------------------------------------------------------------------- encodings
def test_onehot_and_binary_encodings():
    ds = load_dataset("moons", n_samples=40).to(dtype=torch.float64)
    onehot = ds.targets("train", "onehot")
    assert onehot.shape == (len(ds.y_train), 2) and onehot.dtype == torch.float64
    assert torch.equal(onehot.argmax(1), ds.y_train) and torch.equal(onehot.sum(1), torch.ones(len(onehot)).double())
    binary = ds.targets("test", "binary")
    assert binary.shape == (len(ds.y_test), 1) and torch.equal(binary.squeeze(1), ds.y_test.double())
    assert torch.equal(ds.targets("test", "index"), ds.y_test)
    three = load_dataset("blobs", n_samples=30)
    with pytest.raises(ValueError, match=r"'binary' .* needs num_classes == 2, but got 3"):
        three.targets("train", "binary")
    with pytest.raises(ValueError, match=r"encoding must be one of index, onehot, binary, but got 'hot'"):
        encode_targets(three.y_train, 3, "hot", torch.float32)
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\], but got values from 0 to 2"):
        encode_targets(three.y_train, 2, "onehot", torch.float32)


def test_to_returns_a_new_dataset_and_keeps_class_indices_int64():
    ds = load_dataset("xor")
    moved = ds.to("cpu", torch.float64)
    assert moved is not ds and moved.x_train.dtype == torch.float64 and moved.y_train.dtype == torch.int64
    assert ds.x_train.dtype == torch.float32, "the original is unchanged"
    assert moved.targets("train", "onehot").dtype == torch.float64


# ---------------------------------------------------------------------------------------------------- CSV
def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_with_header_and_text_labels(tmp_path):
    path = write(tmp_path, "a,b,kind\n1,2,cat\n3,4,dog\n5,6,cat\n7,8,dog\n\n9,10,cat\n11,12,dog\n")
    ds = load_csv(path, target_column="kind", test_fraction=0.5, standardize=False)
    assert ds.name == "data" and ds.num_classes == 2 and ds.n_features == 2
    assert ds.info["classes"] == ["cat", "dog"] and ds.info["feature_names"] == ["a", "b"]
    x = torch.cat([ds.x_train, ds.x_test])
    y = torch.cat([ds.y_train, ds.y_test])
    for row, label in zip(x.tolist(), y.tolist()):
        assert label == (0 if row[0] in (1, 5, 9) else 1), "each label must stay with its row"


def test_csv_without_header_integer_and_float_targets(tmp_path):
    path = write(tmp_path, "0.5,1,3\n0.1,2,5\n0.7,3,3\n0.2,4,5\n")
    ds = load_csv(path)
    assert ds.num_classes == 2 and ds.info["classes"] == [3, 5] and ds.info["feature_names"] is None
    reg = load_csv(write(tmp_path, "1,0.5\n2,1.5\n3,2.5\n4,3.5\n", "reg.csv"))
    assert reg.num_classes is None and reg.y_train.shape == (3, 1) and reg.y_train.dtype == torch.float32
    assert not reg.is_classification
    assert reg.targets("train", "index") is reg.y_train
    with pytest.raises(ValueError, match="regression dataset"):
        reg.targets("train", "onehot")
    forced = load_csv(path, task="regression", target_column=0)
    assert forced.num_classes is None


def test_load_dataset_routes_files(tmp_path):
    path = write(tmp_path, "x,y\n1,0\n2,1\n3,0\n4,1\n")
    assert load_dataset(str(path)).num_classes == 2
    assert load_dataset(path).n_features == 1
    with pytest.raises(ValueError, match=r"n_samples does not apply to a file"):
        load_dataset(path, n_samples=10)


def test_csv_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"CSV file .*nope\.csv does not exist"):
        load_csv(tmp_path / "nope.csv")


def test_csv_ragged_row_names_the_line(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5,6\n7,8,1\n")
    with pytest.raises(ValueError, match=r"data\.csv, line 4: expected 3 fields like the header \(line 1\), but got 2"):
        load_csv(path)


def test_csv_nan_names_line_and_column(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,0\n3,4,1\n5,nan,0\n7,8,1\n")
    with pytest.raises(ValueError, match=r"data\.csv, line 4, column 'b' \(index 1\): feature value is 'nan'"):
        load_csv(path)
    empty = write(tmp_path, "1,2,0\n3,,1\n5,6,0\n", "empty.csv")
    with pytest.raises(ValueError, match=r"empty\.csv, line 2, column index 1: empty feature value"):
        load_csv(empty)


def test_csv_non_numeric_column_names_the_column(tmp_path):
    path = write(tmp_path, "size,colour,y\n1,red,0\n2,blue,1\n3,red,0\n")
    pattern = r"line 2, column 'colour' \(index 1\): feature columns must be numeric, but got 'red'"
    with pytest.raises(ValueError, match=pattern):
        load_csv(path)


def test_csv_bad_target_column(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match=r"target_column must be one of the header's names \(a, b, y\).* got 'z'"):
        load_csv(path, target_column="z")
    with pytest.raises(ValueError, match=r"target_column must be an index from -3 to 2 .* but got 5"):
        load_csv(path, target_column=5)


def test_csv_values_that_overflow_standardization_name_the_file_and_column(tmp_path):
    """Finite values near 1e308 make the float64 mean and std overflow: refused, not turned into NaN features."""
    path = write(tmp_path, "a,big,y\n1,1e308,0\n2,1.5e308,1\n3,-1e308,0\n4,1.7e308,1\n")
    with pytest.raises(ValueError, match=r"data\.csv, column 'big' \(index 1\): standardizing .* not finite.* "
                                         r"values as large as 1\.7e\+308"):
        load_csv(path, dtype=torch.float64)


def test_csv_values_beyond_the_dtype_name_the_file_and_column(tmp_path):
    path = write(tmp_path, "1,1e39,0\n2,2e39,1\n3,3e39,0\n4,4e39,1\n")
    with pytest.raises(ValueError, match=r"data\.csv, column index 1: values as large as 4e\+39 do not fit "
                                         r"torch\.float32"):
        load_csv(path, standardize=False)
    assert load_csv(path, standardize=False, dtype=torch.float64).x_train.abs().max() >= 1e39
    reg = write(tmp_path, "1,5.5\n2,1e39\n3,7.5\n4,8.5\n", "reg.csv")
    with pytest.raises(ValueError, match=r"reg\.csv, the target column index 1: values as large as 1e\+39 do "
                                         r"not fit torch\.float32"):
        load_csv(reg)


def test_npz_values_that_overflow_name_the_file_and_array(tmp_path):
    x = np.array([[1.0, 1e308], [2.0, -1e308], [3.0, 1.5e308], [4.0, 1.2e308]])
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(4) % 2)
    with pytest.raises(ValueError, match=r"big\.npz, array 'x', column 1: standardizing .* not finite"):
        load_npz(tmp_path / "big.npz")


# ---------------------------------------------------------------------------------------------------- NPZ
def test_npz_happy_path_and_given_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), np.arange(40) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_npz(tmp_path / "d.npz", standardize=False, dtype=torch.float64)
    assert ds.num_classes == 2 and ds.n_features == 3 and len(ds.x_train) == 30
    np.savez(tmp_path / "s.npz", inputs=x, labels=y * 1.5, inputs_test=x[:5], labels_test=y[:5] * 1.5)
    reg = load_dataset(str(tmp_path / "s.npz"), x_key="inputs", y_key="labels")
    assert reg.num_classes is None and reg.x_test.shape == (5, 3) and reg.y_train.shape == (40, 1)
    assert reg.info["split"] == "given by the file"


def test_npz_errors_name_file_key_row_and_column(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"NPZ file .*none\.npz does not exist"):
        load_npz(tmp_path / "none.npz")
    np.savez(tmp_path / "d.npz", features=np.zeros((4, 2)), y=np.arange(4))
    with pytest.raises(ValueError, match=r"d\.npz has no array 'x' \(x_key\); its arrays are: features, y"):
        load_npz(tmp_path / "d.npz")
    x = np.zeros((4, 2))
    x[2, 1] = np.nan
    np.savez(tmp_path / "n.npz", x=x, y=np.arange(4))
    with pytest.raises(ValueError, match=r"n\.npz, array 'x': values must be finite, but row 2, column 1"):
        load_npz(tmp_path / "n.npz")
    np.savez(tmp_path / "l.npz", x=np.zeros((4, 2)), y=np.arange(3))
    with pytest.raises(ValueError, match=r"array 'y': must have shape \(4,\) or \(4, k\).* but got \(3,\)"):
        load_npz(tmp_path / "l.npz")


# ---------------------------------------------------------------------------------------------------- bad arguments
def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ValueError) as err:
        load_dataset("mnist")
    message = str(err.value)
    assert "'mnist'" in message and all(name in message for name in DATASETS)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"n_samples": 0}, r"n_samples must be an int >= 4 .* but got 0"),
        ({"test_fraction": 1.0}, r"test_fraction must be a number strictly between 0 and 1, but got 1\.0"),
        ({"test_fraction": 0}, r"test_fraction must be .* but got 0"),
        ({"noise": -0.1}, r"noise must be a finite number >= 0 .* but got -0\.1"),
        ({"seed": -1}, r"seed must be an int in \[0, 2\*\*63 - 1\], but got -1"),
        ({"seed": 2 ** 70}, r"seed must be an int in \[0, 2\*\*63 - 1\], but got 1180"),
        ({"dtype": torch.int64}, r"dtype must be a floating-point torch dtype .* but got torch\.int64"),
        ({"factor": 0.5}, r"unknown option 'factor' for dataset 'moons'; its options are: none"),
    ],
)
def test_bad_arguments_name_argument_expected_and_got(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_dataset("moons", **kwargs)


def test_arguments_of_the_wrong_type_name_argument_expected_and_got():
    with pytest.raises(TypeError, match=r"n_samples must be an int \(or None for the default\), but got float: 10\.5"):
        load_dataset("moons", n_samples=10.5)


def test_noise_does_not_apply_to_real_data():
    with pytest.raises(ValueError, match=r"noise does not apply to dataset 'digits', but got noise=0\.1"):
        load_dataset("digits", noise=0.1)


@pytest.mark.parametrize("name, modules, package", [
    ("digits", ["sklearn.datasets"], "scikit-learn"),
    ("mnist1d", ["mnist1d", "mnist1d.data"], "mnist1d"),
])
def test_missing_package_names_the_extra(monkeypatch, name, modules, package):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)       # makes `import module` fail like a missing package
    with pytest.raises(ModuleNotFoundError) as err:
        load_dataset(name, **SMALL.get(name, {}))
    message = str(err.value)
    assert f"needs the package {package!r}" in message
    assert "pip install 'manual-backprop[datasets]'" in message and "bash install.sh datasets" in message
