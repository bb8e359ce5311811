"""``load_csv``: the user's data from a CSV file, validated with errors that name the file, the line and the column."""

from __future__ import annotations

import csv
import math
import numbers
from typing import Optional, Union

import numpy as np
import torch

from .dataset import Dataset
from .user_files import check_file, check_task, class_indices, dataset_from_arrays


def load_csv(
    path,
    *,
    target_column: Union[int, str] = -1,
    header: Union[bool, str] = "auto",
    delimiter: str = ",",
    task: str = "auto",
    test_fraction: float = 0.25,
    seed: int = 0,
    standardize: bool = True,
    dtype=torch.float32,
    name: Optional[str] = None,
) -> Dataset:
    """The user's data from a CSV file: one sample per line, numeric feature columns and one target column.

    Args:
        path: the .csv file. Blank lines are skipped; a UTF-8 byte-order mark is accepted.
        target_column: the target's column, an index (0-based, negative counts from the end) or a header name.
        header: True, False, or "auto": the first line is a header when any of its fields is not a number.
        delimiter: the field separator.
        task: "auto": integer-valued (or text) targets are class labels, any other number a regression target;
            "classification" or "regression" to say so. Class labels (numbers or text) are mapped, sorted, to the
            indices 0..K-1; ``info["classes"]`` keeps the labels. Regression targets become a (N, 1) float column,
            never standardized.
        test_fraction, seed: the seeded (stratified for classes) train/test split.
        standardize: scale the features with the training split's mean and std.
        dtype: floating dtype of the inputs.
        name: the Dataset's name; default the file's stem.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file and line (1-based, as an editor counts) and the column, for a row with the
            wrong number of fields, a NaN, infinite or empty value, or a feature column that is not numeric.
    """
    path = check_file(path, "CSV")
    if header not in (True, False, "auto"):
        raise ValueError(f"header must be True, False or 'auto', but got {header!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be a single character, but got {delimiter!r}")
    task = check_task(task)
    _refuse_binary(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter)
            rows = [(reader.line_num, [c.strip() for c in row]) for row in reader]
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a UTF-8 text file: {err}") from None
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable CSV file: {err}") from None
    rows = [(line, row) for line, row in rows if any(row)]               # skip blank lines
    if not rows:
        raise ValueError(f"{path} is empty: expected a header or data lines")

    first_line, first = rows[0]
    second = rows[1][1] if len(rows) > 1 else None
    has_header = header is True or (header == "auto" and _looks_like_header(first, second))
    names = first if has_header else None
    data = rows[1:] if has_header else rows
    width = len(first)
    for line, row in data:
        if len(row) != width:
            what = "the header" if has_header else "the first line"
            raise ValueError(
                f"{path}, line {line}: expected {width} fields like {what} (line {first_line}), but got {len(row)}"
            )
    if len(data) < 2:
        raise ValueError(f"{path} must hold at least 2 data lines to split into train and test, but has {len(data)}")
    if width < 2:
        raise ValueError(f"{path} must have at least 2 columns (features and a target), but has {width}")

    target = _resolve_target_column(target_column, width, names, path)

    def column_name(j: int) -> str:
        return f"column {names[j]!r} (index {j})" if names else f"column index {j}"

    feature_cols = [j for j in range(width) if j != target]
    x = np.empty((len(data), len(feature_cols)), dtype=np.float64)
    for i, (line, row) in enumerate(data):
        for k, j in enumerate(feature_cols):
            x[i, k] = _parse_float(row[j], path, line, column_name(j), what="feature")

    labels = [row[target] for _, row in data]
    lines = [line for line, _ in data]
    if "" in labels:
        raise ValueError(f"{path}, line {lines[labels.index('')]}, {column_name(target)}: empty target value; "
                         f"fill or remove missing values")
    numeric = [_is_number(v) for v in labels]
    if all(numeric):
        values = np.array([_parse_float(v, path, ln, column_name(target), what="target")
                           for v, ln in zip(labels, lines)])
        integral = np.all(values == np.round(values))
        if task == "classification" and not integral:
            i = int(np.nonzero(values != np.round(values))[0][0])
            raise ValueError(
                f"{path}, line {lines[i]}, {column_name(target)}: task='classification' needs integer class labels, "
                f"but got {labels[i]!r}"
            )
        if task == "regression" or (task == "auto" and not integral):
            y, classes = values.reshape(-1, 1), None
        else:
            y, classes = class_indices([int(v) for v in values], path, column_name(target))
    elif not any(numeric) and task != "regression":
        y, classes = class_indices(labels, path, column_name(target))
    else:
        bad = numeric.index(False) if task == "regression" or numeric.count(True) > numeric.count(False) \
            else numeric.index(True)
        expected = "numbers" if task == "regression" else "all numbers or all text class labels"
        raise ValueError(
            f"{path}, line {lines[bad]}, {column_name(target)}: the target must be {expected}, "
            f"but got {labels[bad]!r}"
        )

    info = {
        "source": f"CSV file {path}",
        "feature_names": [names[j] for j in feature_cols] if names else None,
        "target_name": names[target] if names else None,
        "target_column": target,
    }
    return dataset_from_arrays(name or path.stem, x, y, classes, None, None, test_fraction, seed, standardize,
                               dtype, info, columns=[column_name(j) for j in feature_cols],
                               target=f"the target {column_name(target)}")


def _resolve_target_column(target_column, width: int, names, path) -> int:
    if isinstance(target_column, str):
        if not names:
            raise ValueError(
                f"target_column {target_column!r} is a column name, but {path} has no header line; "
                f"pass an index (0 to {width - 1}, or -1 for the last) or header=True"
            )
        if target_column not in names:
            raise ValueError(
                f"target_column must be one of the header's names ({', '.join(names)}) of {path}, "
                f"but got {target_column!r}"
            )
        return names.index(target_column)
    if isinstance(target_column, bool) or not isinstance(target_column, numbers.Integral):
        raise ValueError(f"target_column must be a column index or a header name, but got {target_column!r}")
    if not -width <= target_column < width:
        raise ValueError(
            f"target_column must be an index from {-width} to {width - 1} for the {width} columns of {path}, "
            f"but got {target_column}"
        )
    return int(target_column) % width


def _looks_like_header(first: list, second: Optional[list]) -> bool:
    """A header has text where the next line has a number (a text class column alone is no evidence)."""
    text = [c != "" and not _is_number(c) for c in first]
    if second is None or len(second) != len(first):
        return any(text)
    return any(t and _is_number(c) for t, c in zip(text, second))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_float(cell: str, path, line: int, column: str, what: str) -> float:
    if cell == "":
        raise ValueError(f"{path}, line {line}, {column}: empty {what} value; fill or remove missing values")
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(
            f"{path}, line {line}, {column}: {what} columns must be numeric, but got {cell!r}"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{path}, line {line}, {column}: {what} value is {cell!r}; values must be finite numbers")
    return value


def _refuse_binary(path, chunk: int = 2 ** 20) -> None:
    """A CSV is text: a NUL byte means a binary file (an image, a zip, a disk image, zeros). Scanned in chunks of
    1 MiB before parsing, so a huge binary file is refused at disk speed, without being held in memory whole."""
    offset = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            at = block.find(b"\0")
            if at >= 0:
                raise ValueError(f"{path} is not a text CSV file: it holds NUL bytes (the first at byte "
                                 f"{offset + at}); give a comma-separated text file")
            offset += len(block)
