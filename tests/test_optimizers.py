"""The generated optimizer steps against torch.optim and against hand-typed NumPy references."""
import ast
import dataclasses
import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from codegen.optimizers import render_optimizers, write_optimizers
from derive import optimizers as O
from derive.optimizers import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "generated" / "optimizers.py"
TOL = 1e-12  # params are O(1), so this is relative too
STEPS = 120


def load_module(path, name="generated_optimizers"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return load_module(GENERATED)


def random_problem(seed, steps=STEPS, dtype=np.float64):
    """Parameters of two shapes and a gradient sequence, all O(1)."""
    rng = np.random.default_rng(seed)
    params = {"W1": rng.normal(size=(3, 4)), "b1": rng.normal(size=(3,))}
    grads = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(steps)]
    cast = lambda d: {k: v.astype(dtype) for k, v in d.items()}  # noqa: E731
    return cast(params), [cast(gr) for gr in grads]


def run(step, params, grads, **hyper):
    """Apply `step` to a copy of params for every gradient; return the trajectory of params."""
    params = {k: v.copy() for k, v in params.items()}
    state, path = {}, []
    for gr in grads:
        step(params, {k: v.copy() for k, v in gr.items()}, state, **hyper)
        path.append({k: v.copy() for k, v in params.items()})
    return path


def run_torch(torch_cls, params, grads, **hyper):
    torch = pytest.importorskip("torch")
    tensors = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    opt = torch_cls(list(tensors.values()), **hyper)
    path = []
    for gr in grads:
        for k, t in tensors.items():
            t.grad = torch.tensor(gr[k], dtype=torch.float64)
        opt.step()
        path.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    return path


def max_deviation(path_a, path_b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for a, b in zip(path_a, path_b, strict=True) for k in a)


def assert_same_trajectory(path_a, path_b, tol=TOL):
    """The comparison every test here relies on; test_checker_* show that it fails on a wrong rule."""
    deviation = max_deviation(path_a, path_b)
    assert deviation <= tol, f"trajectories differ by {deviation:.3g} > {tol:g}"
    return deviation


# (our function, our hyperparameters, torch class name, torch hyperparameters)
TORCH_CASES = [
    ("sgd", {"lr": 0.1}, "SGD", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.05}, "SGD", {"lr": 0.1, "weight_decay": 0.05}),
    ("momentum", {"lr": 0.05}, "SGD", {"lr": 0.05, "momentum": 0.9}),
    ("momentum", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
     "SGD", {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01}),
    ("momentum", {"lr": 0.05, "nesterov": True, "weight_decay": 0.01},
     "SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("rmsprop", {}, "RMSprop", {}),
    ("rmsprop", {"weight_decay": 0.1}, "RMSprop", {"weight_decay": 0.1}),
    ("rmsprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.1},
     "RMSprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.1}),
    ("rmsprop", {"alpha": 0.9, "centered": True}, "RMSprop", {"alpha": 0.9, "centered": True}),
    ("adam", {}, "Adam", {}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}, "Adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adam", {"lr": 0.02, "beta1": 0.5, "beta2": 0.9, "eps": 1e-6},
     "Adam", {"lr": 0.02, "betas": (0.5, 0.9), "eps": 1e-6}),
]


@pytest.mark.parametrize("name, ours, torch_name, theirs", TORCH_CASES,
                         ids=[f"{c[0]}-{'-'.join(c[1]) or 'defaults'}" for c in TORCH_CASES])
def test_matches_torch(gen, name, ours, torch_name, theirs):
    torch = pytest.importorskip("torch")
    params, grads = random_problem(seed=len(name) + len(ours))
    expected = run_torch(getattr(torch.optim, torch_name), params, grads, **theirs)
    got = run(getattr(gen, f"{name}_step"), params, grads, **ours)
    assert_same_trajectory(got, expected)
    assert max_deviation(got[-1:], [params]) > 1e-2  # the parameters did move


def test_every_optimizer_is_compared_with_torch():
    assert {c[0] for c in TORCH_CASES} == set(OPTIMIZERS)
    assert {c[0] for c in TORCH_CASES if "weight_decay" in c[1]} == set(OPTIMIZERS)


def test_defaults_are_torchs(gen):
    torch = pytest.importorskip("torch")

    def torch_defaults(cls):
        sig = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in sig.items() if k not in ("self", "params")}

    sgd, rms, adam = (torch_defaults(c) for c in (torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adam))
    assert OPTIMIZERS["sgd"].defaults == {"lr": sgd["lr"], "weight_decay": sgd["weight_decay"]}
    assert OPTIMIZERS["momentum"].defaults == {k: sgd[k] for k in ("lr", "dampening", "weight_decay", "nesterov")} | {
        "momentum": 0.9}
    assert OPTIMIZERS["rmsprop"].defaults == {k: rms[k] for k in OPTIMIZERS["rmsprop"].defaults}
    beta1, beta2 = adam["betas"]
    assert OPTIMIZERS["adam"].defaults == {"lr": adam["lr"], "beta1": beta1, "beta2": beta2, "eps": adam["eps"],
                                           "weight_decay": adam["weight_decay"]}
    for name, opt in OPTIMIZERS.items():  # the generated signatures carry the same defaults
        sig = inspect.signature(getattr(gen, f"{name}_step")).parameters
        assert list(sig) == ["params", "grads", "state", *opt.defaults]
        assert {k: sig[k].default for k in opt.defaults} == opt.defaults


@settings(max_examples=25, deadline=None)
@given(lr=st.floats(1e-4, 0.5), beta1=st.floats(0.0, 0.99), beta2=st.floats(0.5, 0.9999),
       eps=st.sampled_from([1e-8, 1e-6, 1e-3]), weight_decay=st.sampled_from([0.0, 0.01, 0.3]),
       seed=st.integers(0, 2**16))
def test_adam_matches_torch_for_any_hyperparameters(gen, lr, beta1, beta2, eps, weight_decay, seed):
    torch = pytest.importorskip("torch")
    params, grads = random_problem(seed, steps=20)
    hyper = {"lr": lr, "eps": eps, "weight_decay": weight_decay}
    expected = run_torch(torch.optim.Adam, params, grads, betas=(beta1, beta2), **hyper)
    assert_same_trajectory(run(gen.adam_step, params, grads, beta1=beta1, beta2=beta2, **hyper), expected)


# Hand-typed references: the textbook formulas, written without SymPy.

def textbook_sgd(params, grads, state, lr=0.001, weight_decay=0.0):
    for k in params:
        params[k] -= lr * (grads[k] + weight_decay * params[k])


def textbook_momentum(params, grads, state, lr=0.001, momentum=0.9, dampening=0.0, weight_decay=0.0,
                      nesterov=False):
    for k in params:
        d = grads[k] + weight_decay * params[k]
        state[k] = d.copy() if k not in state else momentum * state[k] + (1 - dampening) * d
        params[k] -= lr * (d + momentum * state[k] if nesterov else state[k])


def textbook_rmsprop(params, grads, state, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                     centered=False):
    for k in params:
        d = grads[k] + weight_decay * params[k]
        sq, mean, b = state.setdefault(k, [0.0, 0.0, 0.0])
        sq = alpha * sq + (1 - alpha) * d * d
        mean = alpha * mean + (1 - alpha) * d if centered else 0.0
        b = momentum * b + d / (np.sqrt(sq - mean * mean) + eps)
        params[k] -= lr * b
        state[k] = [sq, mean, b]


def textbook_adam(params, grads, state, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
    """Kingma & Ba 2015, Algorithm 1 (plus L2 weight decay on the gradient, as torch)."""
    for k in params:
        d = grads[k] + weight_decay * params[k]
        t, m, v = state.get(k, (0, 0.0, 0.0))
        t += 1
        m = beta1 * m + (1 - beta1) * d
        v = beta2 * v + (1 - beta2) * d**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        params[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
        state[k] = (t, m, v)


TEXTBOOK = {"sgd": textbook_sgd, "momentum": textbook_momentum, "rmsprop": textbook_rmsprop, "adam": textbook_adam}
TEXTBOOK_CASES = [(name, hyper) for name, hyper, _, _ in TORCH_CASES]


@pytest.mark.parametrize("name, hyper", TEXTBOOK_CASES, ids=[f"{n}-{'-'.join(h) or 'defaults'}" for n, h in
                                                              TEXTBOOK_CASES])
def test_matches_textbook(gen, name, hyper):
    params, grads = random_problem(seed=7)
    assert_same_trajectory(run(getattr(gen, f"{name}_step"), params, grads, **hyper),
                           run(TEXTBOOK[name], params, grads, **hyper))


@pytest.mark.parametrize("g", [0.3, -2.0, 1e-3])
@pytest.mark.parametrize("eps", [0.0, 1e-8])
def test_adam_moves_by_lr_per_step_under_a_constant_gradient(gen, g, eps):
    # m_hat = g and v_hat = g**2 at every step, so each step is lr*g/(|g| + eps):
    # exactly lr*sign(g) when eps = 0, and lr to within eps/|g| otherwise.
    lr, steps = 0.01, 150
    params, state, before = {"w": np.zeros(5)}, {}, np.zeros(5)
    for _ in range(steps):
        gen.adam_step(params, {"w": np.full(5, g)}, state, lr=lr, eps=eps)
        moved = before - params["w"]
        np.testing.assert_allclose(moved, lr * g / (abs(g) + eps), rtol=1e-12, atol=0)
        np.testing.assert_allclose(moved, lr * np.sign(g), rtol=1.01 * eps / abs(g) + 1e-12, atol=0)
        before = params["w"].copy()
    assert state["w"]["t"] == steps


def test_adam_without_eps_has_the_textbook_step_exactly(gen):
    params, state = {"w": np.zeros(3)}, {}
    gen.adam_step(params, {"w": np.array([0.5, -4.0, 2.0])}, state, lr=0.1, eps=0.0)
    np.testing.assert_allclose(params["w"], [-0.1, 0.1, -0.1], rtol=1e-15)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_float32_stays_float32(gen, name):
    params, grads = random_problem(seed=3, steps=5, dtype=np.float32)
    flags = {"momentum": {"nesterov": True, "weight_decay": 0.1}, "rmsprop": {"centered": True, "momentum": 0.5},
             "adam": {"weight_decay": 0.1}}.get(name, {"weight_decay": 0.1})
    start = {k: v.astype(np.float64) for k, v in params.items()}
    arrays = dict(params)
    state = {}
    for gr in grads:
        getattr(gen, f"{name}_step")(params, gr, state, **flags)
    for k, p in params.items():
        assert p is arrays[k] and p.dtype == np.float32  # updated in place, no upcast
        assert all(b.dtype == np.float32 for b in state[k].values() if isinstance(b, np.ndarray))
    # float32 runs follow the float64 ones to float32 precision
    ref = run(getattr(gen, f"{name}_step"), start,
              [{k: v.astype(np.float64) for k, v in gr.items()} for gr in grads], **flags)
    assert max_deviation([params], ref[-1:]) < 1e-5


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gradients_are_not_modified(gen, name):
    params, grads = random_problem(seed=5, steps=3)
    originals = [{k: v.copy() for k, v in gr.items()} for gr in grads]
    state = {}
    for gr in grads:
        getattr(gen, f"{name}_step")(params, gr, state, weight_decay=0.1)
    for gr, orig in zip(grads, originals):
        for k in gr:
            np.testing.assert_array_equal(gr[k], orig[k])


# The checker can fail: plant the wrong rules and watch the comparison reject them.

def planted(tmp_path, name, **rules):
    """A module generated from OPTIMIZERS[name] with some rules replaced."""
    opt = OPTIMIZERS[name]
    new = tuple((target, rules.get(target.name, expr)) for target, expr in opt.rules)
    wrong = dataclasses.replace(opt, rules=new)
    path = tmp_path / f"planted_{name}.py"
    path.write_text(render_optimizers({name: wrong}))
    return getattr(load_module(path, path.stem), f"{name}_step")


WRONG_RULES = [
    # seed 003: the second moment decays with beta1
    ("adam", {"v": O.beta1 * O.v + (1 - O.beta1) * O.g**2}, {}),
    # seed 003: no bias correction
    ("adam", {"m_hat": O.m, "v_hat": O.v}, {}),
    # the first momentum buffer as (1 - dampening)*g instead of torch's g
    ("momentum", {"buf": O.momentum * O.buf + (1 - O.dampening) * O.g}, {"dampening": 0.5}),
    # weight decay with the wrong sign
    ("sgd", {"g": O.g - O.weight_decay * O.p}, {"weight_decay": 0.1}),
]


@pytest.mark.parametrize("name, rules, hyper", WRONG_RULES, ids=[f"{n}-{'-'.join(r)}" for n, r, _ in WRONG_RULES])
def test_checker_rejects_a_planted_wrong_rule(gen, tmp_path, name, rules, hyper):
    params, grads = random_problem(seed=11)
    wrong = planted(tmp_path, name, **rules)
    reference = run(TEXTBOOK[name], params, grads, **hyper)
    assert_same_trajectory(run(getattr(gen, f"{name}_step"), params, grads, **hyper), reference)
    with pytest.raises(AssertionError, match="trajectories differ"):
        assert_same_trajectory(run(wrong, params, grads, **hyper), reference)


def test_checker_rejects_seed_003_adam_against_torch(tmp_path):
    torch = pytest.importorskip("torch")
    params, grads = random_problem(seed=13)
    wrong = planted(tmp_path, "adam", v=O.beta1 * O.v + (1 - O.beta1) * O.g**2)
    with pytest.raises(AssertionError, match="trajectories differ"):
        assert_same_trajectory(run(wrong, params, grads), run_torch(torch.optim.Adam, params, grads))


# The generated file itself.

def test_generated_file_is_fresh():
    assert GENERATED.read_text() == render_optimizers(), "run: python -m codegen.optimizers"


def test_generated_file_imports_numpy_only_and_reads_as_numpy():
    source = GENERATED.read_text()
    assert source.startswith("# Code generated by nnderive") and "DO NOT EDIT." in source.splitlines()[0]
    tree = ast.parse(source)
    assert ast.get_docstring(tree) and "\n" not in ast.get_docstring(tree)
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [(a.name, a.asname) for n in imports for a in n.names] == [("numpy", "np")]
    for bad in ("numpy.", "functools", "**(-1.0)", "math.", "lambda"):
        assert bad not in source
    assert {n.name for n in tree.body if isinstance(n, ast.FunctionDef)} == {f"{k}_step" for k in OPTIMIZERS}


def test_rendering_is_deterministic_across_hash_seeds():
    code = "import sys; from codegen.optimizers import render_optimizers; sys.stdout.write(render_optimizers())"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outputs == {render_optimizers()}


def test_write_optimizers_is_atomic_and_complete(tmp_path):
    target = write_optimizers(tmp_path / "out")
    assert target == tmp_path / "out" / "optimizers.py"
    assert target.read_text() == render_optimizers()
    assert [p.name for p in target.parent.iterdir()] == ["optimizers.py"]  # no temporary left behind
    assert target.stat().st_mode & 0o644 == 0o644


# The derivation side.

@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_rules_are_sympy_over_known_symbols(name):
    opt = OPTIMIZERS[name]
    known = {O.p, O.g, O.t} | set(opt.state) | {s for s, _ in opt.hyperparameters} | {t for t, _ in opt.rules}
    assert opt.rules[-1][0] == O.p
    for target, expr in opt.rules:
        assert isinstance(expr, sp.Expr) and expr.free_symbols <= known, (target, expr)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_latex(name):
    tex = OPTIMIZERS[name].latex()
    assert tex.startswith("\\begin{aligned}") and tex.endswith("\\end{aligned}")
    assert tex.count("\\leftarrow") == len(OPTIMIZERS[name].rules)
    assert "p &\\leftarrow " in tex and "p - " in tex.split("p &\\leftarrow ")[1]


def test_adam_latex_uses_beta2_for_the_second_moment_and_corrects_bias():
    lines = OPTIMIZERS["adam"].latex().splitlines()
    assert any(line.startswith("v &") and "\\beta_{2}" in line and "\\beta_{1}" not in line for line in lines)
    assert any(line.startswith("\\hat{v} &") and "1 - \\beta_{2}^{t}" in line for line in lines)
