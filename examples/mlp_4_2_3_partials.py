"""Seed 001's 4-2-3 network (relu, sigmoid, mean squared error): the four partials dL/dW1, dL/db1, dL/dW2, dL/db2."""
import numpy as np
import sympy as sp

from derive import Dense, Network
from derive.latex import latex, numeric, pieces, symbol
from derive.verify import param_symbols

net = Network("mlp_4_2_3", 4, [Dense(2, "relu"), Dense(3, "sigmoid")], loss="mse")
p = pieces(net)

print(f"network: {net.describe()}")
print(f"sigmoid'(z2) = {p.activation(2).fprime} = {p.activation(2).fprime_a}")
print(f"relu'(z1) = {p.activation(1).fprime} = {p.activation(1).fprime_a}")
print(f"output delta (one example): {p.output_delta}")
print(f"delta2 = {p.delta(2)}")
print(f"delta1 = {p.delta(1)},  g1 = {p.upstream(1)}")
shapes = net.param_shapes()        # the generated module's PARAM_SHAPES: b1 is (2,), dL/db1 too
for l in (1, 2):
    print(f"dL/dW{l} = {p.dW(l)}  shape {shapes[f'W{l}']}")
    print(f"dL/db{l} = {p.db(l)}  shape {shapes[f'b{l}']}")
print(f"LaTeX of delta2: {latex(p.delta(2))}")

# Numbers: one example, the seed's way, through the pieces (not through generated code).
rng = np.random.default_rng(0)
W1, b1 = rng.normal(size=(2, 4)), np.array([0.5, 0.5])
W2, b2 = rng.normal(size=(3, 2)), np.zeros(3)
x = np.array([[1.0, -2.0, 0.5, 3.0]])
y = np.array([[0.0, 1.0, 0.0]])
z1 = numeric(p.forward(1)[0] + p.forward(1)[1], {"x": x, "W1": W1, "b1": b1})
a1 = numeric(p.activation(1).f, {"z1": z1})
z2 = numeric(p.forward(2)[0] + p.forward(2)[1], {"a1": a1, "W2": W2, "b2": b2})
a2 = numeric(p.activation(2).f, {"z2": z2})
delta2 = numeric(p.delta(2), {"a2": a2, "y": y, "n": 1})
g1 = numeric(p.upstream(1), {"delta2": delta2, "W2": W2})
delta1 = numeric(p.delta(1), {"g1": g1, "a1": a1})
grads = {"W2": numeric(p.dW(2), {"delta2": delta2, "a1": a1}), "b2": numeric(p.db(2), {"delta2": delta2}),
         "W1": numeric(p.dW(1), {"delta1": delta1, "x": x}), "b1": numeric(p.db(1), {"delta1": delta1})}
for name in ("W1", "b1", "W2", "b2"):
    print(f"dL/d{name} =\n{np.array2string(grads[name].squeeze(), precision=6)}")

# The same four partials by plain sp.diff of the loss written out weight by weight.
P = param_symbols(net)
values = {s: v for name, M in P.items() for s, v in zip(M, np.ravel({"W1": W1, "b1": b1, "W2": W2, "b2": b2}[name]))}
acts = [sp.Float(v) for v in x[0]]
for l in (1, 2):
    W, b, f = P[f"W{l}"], P[f"b{l}"], p.activation(l).f
    acts = [f.subs(symbol(f"z{l}"), sum(W[k, j] * acts[j] for j in range(len(acts))) + b[k]) for k in range(W.shape[0])]
loss = sum((ak - yk) ** 2 / 2 for ak, yk in zip(acts, y[0]))
worst = max(abs(float(sp.diff(loss, s).subs(values)) - float(np.ravel(grads[name])[i]))
            for name, M in P.items() for i, s in enumerate(M))
print(f"largest difference from sp.diff of the expanded loss: {worst:.1e}")
