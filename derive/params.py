"""Parameter files: .npz of one array per parameter, checked against a module's PARAM_SHAPES."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import DataError, read_npz
from .files import write_file


def fit_params(params: dict, shapes: dict, dtype, source: str = "params") -> dict:
    """Copies of params in dtype, checked against the module's PARAM_SHAPES."""
    expected = {k: tuple(v) for k, v in shapes.items()}
    found = {k: tuple(np.shape(v)) for k, v in params.items()}
    if found != expected:
        raise DataError(source, "", f"parameters {describe_shapes(found)} do not fit the network's {describe_shapes(expected)}",
                        "load parameters saved by training this spec")
    return {k: np.array(params[k], dtype=dtype) for k in expected}


def describe_shapes(shapes: dict) -> str:
    return ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items()) or "(none)"


def save_params(params: dict, path) -> None:
    """Write params to an .npz file (one array per name), atomically."""
    write_file(Path(path), lambda f: np.savez(f, **params))


def load_params(path, shapes: dict, dtype=np.float64) -> dict:
    """Read params saved by save_params (or np.savez) and check them against `shapes`."""
    path = Path(path)
    # Names, dtypes and shapes are checked from the .npy headers before any array is decompressed.
    params = read_npz(path, shapes=shapes, fix="name a .npz file written by nnderive train --save of this spec")
    for k, v in params.items():
        if not np.all(np.isfinite(v)):
            raise DataError(str(path), k, "holds NaN or infinity", "load parameters from a run that did not diverge")
    return fit_params(params, shapes, dtype, str(path))
