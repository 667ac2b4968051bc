"""verify catches the planted errors a careful reviewer expects to be caught (issue 12), and names them."""
import pytest

from conftest import ROOT, run_cli
from derive.spec import Dense, Network, load_spec
from derive.verify import check_module, load_module

MLP = load_spec(ROOT / "examples" / "mlp_4_2_3.toml")                    # relu, sigmoid, mse
WIDE = Network("wide", 5, [Dense(24, "relu"), Dense(12, "softmax")], loss="cce")
GELU = Network("gelu_net", 3, [Dense(6, "gelu"), Dense(2, "identity")], loss="mse")
MAE = Network("mae_net", 3, [Dense(3, "tanh"), Dense(2, "identity")], loss="mae")
NETS = {"mlp_4_2_3": MLP, "wide": WIDE, "gelu_net": GELU, "mae_net": MAE}

DW1 = "    dW1 = delta1.T.dot(x)\n"
DW2 = "    dW2 = delta2.T.dot(a1)\n"
# (network, text in the module, its replacement, the entry point and the name the failure must carry)
PLANTED = {
    "a row of dW1 x 1.01": ("wide", DW1, DW1 + "    dW1[7] *= 1.01\n", "loss_and_grad", "W1"),
    "db1[20] += 1e-3": ("wide", "    db1 = ones.dot(delta1) if n > 1 else delta1[0]\n",
                        "    db1 = ones.dot(delta1) if n > 1 else delta1[0].copy()\n    db1[20] += 1e-3\n",
                        "loss_and_grad", "b1"),
    "relu mask on units 0..2 only": ("wide", "delta1 *= (a1 > 0)", "delta1[:, :3] *= (a1[:, :3] > 0)",
                                     "loss_and_grad", "W1"),
    "sign flip in dW2[:, 10]": ("wide", DW2, DW2 + "    dW2[:, 10] *= -1\n", "loss_and_grad", "W2"),
    "softmax entry dW2[11, 1] x 1.001": ("wide", DW2, DW2 + "    dW2[11, 1] *= 1.001\n", "loss_and_grad", "W2"),
    "sign flip when batch > 2": ("mlp_4_2_3", DW1, DW1 + "    if n > 2:\n        dW1 = -dW1\n", "loss_and_grad", "W1"),
    "1/n hard-coded as 1/2": ("mlp_4_2_3", "_backward(params, y, 1 / y.shape[0], x,", "_backward(params, y, 1 / 2, x,",
                              "loss_and_grad", "W1"),
    "batch-1 branch of db2 x 1.01": ("mlp_4_2_3", "else delta2[0]\n", "else delta2[0] * 1.01\n", "loss_and_grad", "b2"),
    "sign flip when max|x| > 2.5": ("mlp_4_2_3", DW1, DW1 + "    if np.max(np.abs(x)) > 2.5:\n        dW1 = -dW1\n",
                                    "loss_and_grad", "W1"),
    "sigmoid' + 0.01 where a > 0.9": ("mlp_4_2_3", "delta2 = a2*(1 - a2)*(a2 - y)",
                                      "delta2 = (a2*(1 - a2) + 0.01*(a2 > 0.9))*(a2 - y)", "loss_and_grad", "W2"),
    "dW1 x 1.01 in float32 only": ("mlp_4_2_3", DW1, DW1 + "    if x.dtype == np.float32:\n        dW1 = dW1 * 1.01\n",
                                   "loss_and_grad", "W1"),
    "dW1 returned as float64": ("mlp_4_2_3", DW1, DW1 + "    dW1 = dW1.astype(np.float64)\n", "dtype", "loss_and_grad"),
    "vectorised _sigmoid x 1.0001": ("mlp_4_2_3", "    s /= e\n", "    s /= e\n    s *= 1.0001\n", "forward", "a2"),
    "backward with 2/n": ("mlp_4_2_3", '_backward(params, y, 1 / y.shape[0], cache["x"]',
                          '_backward(params, y, 2 / y.shape[0], cache["x"]', "backward", "W1"),
    "sgd_step with lr/(n+1)": ("mlp_4_2_3", "lr / y.shape[0]", "lr / (y.shape[0] + 1)", "sgd_step", "W1"),
    "predict x 1.01": ("mlp_4_2_3", "return _forward(params, _inputs(params, x))[-1]",
                       "return _forward(params, _inputs(params, x))[-1] * 1.01", "predict", "y_hat"),
    "forward cache a1 x 1.001": ("mlp_4_2_3", '"a1": a1,', '"a1": a1 * 1.001,', "forward", "a1"),
    "loss + 0.001": ("mlp_4_2_3", "return _loss(_targets(y, a2), a2)", "return _loss(_targets(y, a2), a2) + 0.001",
                     "loss", "L"),
    # backward's relu mask reads a1 (relu' = [a1 > 0]); z1 >= 0 differs from it only where z1 is exactly 0
    "relu mask >= instead of >": ("mlp_4_2_3", "delta1 *= (a1 > 0)", 'delta1 *= (x.dot(params["W1"].T) + params["b1"] >= 0)',
                                  "loss_and_grad", "W1"),
    "erfc tail branch x 1.001": ("gelu_net", "np.where(y <= 4.0, r_mid, r_big)", "np.where(y <= 4.0, r_mid, r_big * 1.001)",
                                 "forward", "a1"),
    "mae'(0) taken as 1": ("mae_net", "delta2 = 1 - 2*np.heaviside(-a2 + y, 1)", "delta2 = np.where(a2 >= y, 1.0, -1.0).astype(a2.dtype)",
                           "loss_and_grad", "W2"),
    # every other checker fails on a planted error too
    "cache z1 + 1e-6": ("gelu_net", '"z1": z1,', '"z1": z1 + 1e-6,', "forward", "z1"),
    "cache x altered": ("mlp_4_2_3", '"x": x,', '"x": x * 1.0001,', "forward", "x"),
    "loss_and_grad's loss x 1.001": ("mlp_4_2_3", "return _loss(y, a2), {", "return _loss(y, a2) * 1.001, {",
                                     "loss_and_grad", "L"),
    "sgd_step returns the loss after the step": ("mlp_4_2_3", "    return _loss(y, a2)\n\n\ndef predict",
                                                 "    return _loss(y, _forward(params, x)[-1])\n\n\ndef predict",
                                                 "sgd_step", "L"),
    "loss with a wrong slope in W1": ("mlp_4_2_3", "return _loss(_targets(y, a2), a2)",
                                      'return _loss(_targets(y, a2), a2) + 1e-3 * float(params["W1"][0, 0])',
                                      "finite differences", "W1"),
    "predict writes into x": ("mlp_4_2_3", "    return _forward(params, _inputs(params, x))[-1]",
                              "    x[0, 0] = 0.0\n    return _forward(params, _inputs(params, x))[-1]",
                              "inputs unchanged", "predict"),
    "backward writes into the cache": ("mlp_4_2_3", '    y = _targets(y, cache["a2"])\n',
                                       '    cache["a1"][0, 0] = 1.0\n    y = _targets(y, cache["a2"])\n',
                                       "inputs unchanged", "backward"),
    "init_params ignores the dtype": ("mlp_4_2_3", 'params["b1"] = np.zeros(2, dtype=dtype)', 'params["b1"] = np.zeros(2)',
                                      "init_params", "float32"),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from codegen.build import module_outputs
    return {name: module_outputs(net)[f"{name}.py"] for name, net in NETS.items()}


CURVATURE = "\n# --- curvature"


def plant(sources, tmp_path, net_name, old, new):
    """The module with `old` replaced once, in the first-order part (the curvature functions,
    which repeat the backward statements, are left as they are: they have their own check)."""
    text = sources[net_name]
    first, curvature = text.split(CURVATURE, 1)
    assert first.count(old) == 1, f"{old!r} is not once in {net_name}.py"
    path = tmp_path / f"{net_name}.py"
    path.write_text(first.replace(old, new) + CURVATURE + curvature)
    return path


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_planted_error_is_caught_and_named(case, sources, tmp_path):
    net_name, old, new, entry, name = PLANTED[case]
    report = check_module(NETS[net_name], load_module(plant(sources, tmp_path, net_name, old, new)))
    assert not report.ok, report.table()
    failing = [(r.entry, r.param) for r in report.rows if not r.ok]
    assert (entry, name) in failing, report.table()
    line = next(line for line in report.failures() if line.startswith(f"{entry} {name}:"))
    assert "np.float" not in line and "np.int" not in line, line


@pytest.mark.parametrize("name", sorted(NETS))
def test_unplanted_modules_pass(name, sources, tmp_path):
    path = tmp_path / f"{name}.py"
    path.write_text(sources[name])
    report = check_module(NETS[name], load_module(path))
    assert report.ok, report.table()


def test_cli_exits_1_naming_entry_point_parameter_and_values(sources, tmp_path):
    spec = ROOT / "examples" / "mlp_4_2_3.toml"
    bad = plant(sources, tmp_path, "mlp_4_2_3", DW1, DW1 + "    dW1[1] *= 1.01\n")
    r = run_cli("verify", spec, "--module", bad)
    assert r.returncode == 1, r.stdout + r.stderr
    line = next(line for line in r.stderr.splitlines() if "loss_and_grad W1" in line)
    assert "generated" in line and "symbolic" in line and "finite differences" in line, line
    assert "np.float64" not in r.stdout + r.stderr and "np.int64" not in r.stdout + r.stderr
