"""Shared fixtures: a seeded rng, float64 by default, and generated modules built on the fly."""
import contextlib
import itertools
import sys
import warnings
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


@pytest.fixture(scope="session")
def matplotlib_config(request, tmp_path_factory):
    """MPLCONFIGDIR for the session and its subprocesses: a folder of the tests' own (in .pytest_cache, so it
    persists between runs), its font cache built here first. A subprocess that plots then finds the cache
    instead of building it and printing "Matplotlib is building the font cache" on a fresh machine's stderr."""
    import os
    import subprocess
    cache = getattr(request.config, "cache", None)      # None under -p no:cacheprovider
    path = cache.mkdir("matplotlib") if cache is not None else tmp_path_factory.mktemp("matplotlib")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MPLCONFIGDIR", str(path))
        # Without matplotlib this fails quietly; the tests that need it say so themselves.
        subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], capture_output=True,
                       env=os.environ.copy(), timeout=300)
        yield path


# The SpecWarnings a test may expect, as regular expressions for the message (which starts with the spec's
# name and the place; no colons: pytest's filterwarnings marks split on them). Any other SpecWarning fails
# the test: pyproject.toml has filterwarnings = error::derive.errors.SpecWarning.
SPEC_WARNINGS = {
    "slow_softmax": r".* loss\W+\w+ on a softmax output learns slowly",          # mse, mae ... on a softmax
    "softmax_bce": r".* loss\W+\w+ on a softmax output treats classes that sum to 1 as independent",
    "untrainable": r".*activation\W+\w+ has zero derivative, so layers? [\d.]+ get zero gradients",  # step, sign
}


def expects_spec_warning(kind: str, action: str = "ignore"):
    """A filterwarnings mark for a test whose network is odd on purpose: the SpecWarning of that kind passes
    (ignored, or with action "always" shown, for a test that reads it), every other one still fails."""
    return pytest.mark.filterwarnings(f"{action}:{SPEC_WARNINGS[kind]}:derive.errors.SpecWarning")


@contextlib.contextmanager
def spec_warnings_expected(*kinds: str):
    """The same as a block, for networks made outside a test (a module's constants, a Hypothesis strategy)."""
    from derive.errors import SpecWarning
    with warnings.catch_warnings():
        for kind in kinds:
            warnings.filterwarnings("ignore", SPEC_WARNINGS[kind], SpecWarning)
        yield


def count_calls(fn, *args, expect=(), **kwargs):
    """(fn's result, or the exception of an `expect`ed type it raised; the function calls it made, Python and C).

    The measure of work for the tests' "this stays cheap" bounds: the same on every machine however busy,
    where a clock would make CI fail on a slow runner. cProfile counts in C, at a small cost per call."""
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
    try:
        outcome = fn(*args, **kwargs)
    except expect as e:              # returned, for the caller to check beside the count
        outcome = e
    finally:
        profile.disable()
    return outcome, sum(entry.callcount for entry in profile.getstats())


def run_cli(*args, cwd=None):
    """Run the nnderive command in a subprocess, as a user would."""
    import subprocess
    return subprocess.run([sys.executable, "-m", "codegen.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT)
