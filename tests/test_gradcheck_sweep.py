"""gradcheck raises no false alarm on correct hand-written backward passes: every activation, every loss,
several seeds, float64 and float32 (the documented sweep, README "Checking your own backward pass")."""
import math

import numpy as np
import pytest

from conftest import ROOT, run_cli, spec_warnings_expected
from derive.gradcheck import gradcheck
from derive.spec import Dense, Network

_erf = np.vectorize(math.erf, otypes=[float])
_C = math.sqrt(2 / math.pi)


def _sig(z):
    return 1 / (1 + np.exp(-z))


# a student's activations and derivatives, typed by hand: f(z) and f'(z) (params: alpha, beta)
ACTS = {
    "identity": (lambda z, p: z, lambda z, p: np.ones_like(z)),
    "sigmoid": (lambda z, p: _sig(z), lambda z, p: _sig(z) * (1 - _sig(z))),
    "tanh": (lambda z, p: np.tanh(z), lambda z, p: 1 - np.tanh(z) ** 2),
    "relu": (lambda z, p: np.maximum(z, 0), lambda z, p: (z > 0).astype(z.dtype)),
    "leaky_relu": (lambda z, p: np.where(z > 0, z, p * z), lambda z, p: np.where(z > 0, 1, p).astype(z.dtype)),
    "elu": (lambda z, p: np.where(z > 0, z, p * np.expm1(np.minimum(z, 0))),
            lambda z, p: np.where(z > 0, 1, p * np.exp(np.minimum(z, 0))).astype(z.dtype)),
    "gelu": (lambda z, p: (z * 0.5 * (1 + _erf(z / math.sqrt(2)))).astype(z.dtype),
             lambda z, p: (0.5 * (1 + _erf(z / math.sqrt(2))) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi))
             .astype(z.dtype)),
    "gelu_tanh": (lambda z, p: 0.5 * z * (1 + np.tanh(_C * (z + 0.044715 * z ** 3))),
                  lambda z, p: 0.5 * (1 + np.tanh(_C * (z + 0.044715 * z ** 3)))
                  + 0.5 * z * (1 - np.tanh(_C * (z + 0.044715 * z ** 3)) ** 2) * _C * (1 + 3 * 0.044715 * z ** 2)),
    "softplus": (lambda z, p: np.logaddexp(0, z), lambda z, p: _sig(z)),
    "swish": (lambda z, p: z * _sig(p * z), lambda z, p: _sig(p * z) + p * z * _sig(p * z) * (1 - _sig(p * z))),
    "step": (lambda z, p: (z > 0).astype(z.dtype), lambda z, p: np.zeros_like(z)),
    "sign": (lambda z, p: np.sign(z), lambda z, p: np.zeros_like(z)),
}
PARAM = {"leaky_relu": 0.1, "elu": 1.5, "swish": 1.0}


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def correct_grad(net):
    """A textbook backward pass for `net`, written independently of nnderive."""
    acts = [la.activation for la in net.layers]
    alphas = [PARAM.get(a) if a not in ("leaky_relu", "elu", "swish") else
              net.layers[i].params.get("alpha", net.layers[i].params.get("beta", PARAM[a])) for i, a in enumerate(acts)]

    def grad(params, x, y):
        n = x.shape[0]
        a, zs, As = x, [], [x]
        for l, act in enumerate(acts, start=1):
            z = a @ params[f"W{l}"].T + params[f"b{l}"]
            a = softmax(z) if act == "softmax" else ACTS[act][0](z, alphas[l - 1])
            zs.append(z)
            As.append(a)
        K = a.shape[1]
        t = np.eye(K, dtype=a.dtype)[y] if net.loss == "sparse_cce" else y
        out = acts[-1]
        if (out, net.loss) in (("softmax", "cce"), ("softmax", "sparse_cce"), ("sigmoid", "bce")):
            delta = (a - t) / n
        else:
            g = {"mse": lambda: a - t, "mae": lambda: np.sign(a - t),
                 "bce": lambda: (a - t) / (a * (1 - a))}[net.loss]() / n
            delta = a * (g - (g * a).sum(axis=1, keepdims=True)) if out == "softmax" else \
                g * ACTS[out][1](zs[-1], alphas[-1])
        grads = {}
        for l in range(len(acts), 0, -1):
            grads[f"W{l}"] = delta.T @ As[l - 1]
            grads[f"b{l}"] = delta.sum(axis=0)
            if l > 1:
                g = delta @ params[f"W{l}"]
                act = acts[l - 2]
                delta = As[l - 1] * (g - (g * As[l - 1]).sum(axis=1, keepdims=True)) if act == "softmax" else \
                    g * ACTS[act][1](zs[l - 2], alphas[l - 2])
        return grads

    return grad


HIDDEN = sorted(ACTS) + ["softmax"]
OUTPUTS = [("identity", "mse"), ("identity", "mae"), ("sigmoid", "bce"), ("softmax", "cce"), ("softmax", "sparse_cce"),
           ("softmax", "mse"), ("sigmoid", "mse"), ("tanh", "mae")]
# every activation (as the hidden layer) x every loss, plus the other output activations
SWEEP = [(h, o, loss) for h in HIDDEN for o, loss in OUTPUTS[:5]] + [("tanh", o, loss) for o, loss in OUTPUTS[5:]]


@pytest.mark.parametrize("hidden, out, loss", SWEEP, ids=[f"{h}-{o}-{l}" for h, o, l in SWEEP])
def test_no_false_alarm_on_a_correct_backward(hidden, out, loss, build_module):
    params = {"alpha": PARAM[hidden]} if hidden in ("leaky_relu", "elu") else \
        ({"beta": PARAM[hidden]} if hidden == "swish" else {})
    with spec_warnings_expected("slow_softmax", "untrainable"):     # every pairing, the odd ones too
        net = Network("sweep", 3, [Dense(4, hidden, **params), Dense(3, out)], loss=loss)
    reference = build_module(net)
    for seed in ((0, 1, 2, 3) if loss == "mse" else (0,)):
        report = gradcheck(net, correct_grad(net), reference, seed=seed)
        assert report.ok, report.text()


def test_gradcheck_fails_a_correct_module_for_the_wrong_spec(build_module):
    """The check can fail: a correct backward of one network is wrong for another."""
    net = Network("sweep", 3, [Dense(4, "tanh"), Dense(3, "identity")], loss="mse")
    other = Network("sweep", 3, [Dense(4, "sigmoid"), Dense(3, "identity")], loss="mse")
    report = gradcheck(net, correct_grad(other), build_module(net))
    assert not report.ok


def test_cli_gradcheck(tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text('name = "net"\ninputs = 3\nloss = "mse"\n\n[[layers]]\nunits = 4\nactivation = "relu"\n\n'
                    '[[layers]]\nunits = 2\nactivation = "sigmoid"\n')
    mistake = ROOT / "tests" / "mistakes" / "01_transposed_dW1.py"
    r = run_cli("gradcheck", spec, f"{mistake}:grad")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "W1" in r.stdout and "transposed" in r.stdout and "b1    ok" in r.stdout
    r = run_cli("gradcheck", spec, ROOT / "generated" / "mlp_4_2_3.py")
    assert r.returncode == 2 and "PARAM_SHAPES" not in r.stdout and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("gradcheck", spec, f"{mistake}:nope")
    assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("gradcheck", spec, tmp_path)
    assert r.returncode == 2 and "directory" in r.stderr and "Traceback" not in r.stderr
