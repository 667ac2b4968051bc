"""Shared fixtures: a seeded rng, float64 by default, and generated modules built on the fly."""
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
_counter = itertools.count()

# Property tests draw the same examples on every run and machine: CI's verdict does not depend on luck.
from hypothesis import settings  # noqa: E402

settings.register_profile("nnderive", derandomize=True, database=None)
settings.load_profile("nnderive")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def build_module(tmp_path_factory):
    """Generate a network's module into a temporary folder and import it by path."""
    from codegen.build import module_outputs, write_outputs
    from derive.verify import load_module

    def build(net):
        out = tmp_path_factory.mktemp(f"gen{next(_counter)}")
        write_outputs(module_outputs(net), out)
        return load_module(out / f"{net.name}.py")

    return build


def run_cli(*args, cwd=None):
    """Run the nnderive command in a subprocess, as a user would."""
    import subprocess
    return subprocess.run([sys.executable, "-m", "codegen.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT)
