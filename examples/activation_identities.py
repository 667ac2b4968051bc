"""Seed 001's derivative identities, derived by nnderive: sigmoid' = sigma (1 - sigma), tanh' = 1 - tanh^2."""
import sympy as sp

from derive.latex import activation, latex

for name in ("sigmoid", "tanh", "softplus", "relu", "swish"):
    act = activation(name)
    print(f"{name}: f(z) = {act.f}")
    print(f"  f'(z) = {act.fprime}  (sp.diff)")
    if act.fprime_a is None:
        print(f"  no form in a = f(z): {name} is not one-to-one")
        continue
    # The identity holds for every z: substitute a = f(z) back and simplify the difference (piece by
    # piece where f has pieces: relu is Max(0, z)).
    difference = sp.piecewise_fold((act.fprime_a.subs(act.a, act.f) - act.fprime).rewrite(sp.Piecewise))
    print(f"  f'(z) = {act.fprime_a}  in a = f(z) (identity holds: {sp.simplify(difference) == 0})")
    print(f"  LaTeX: {latex(act.fprime_a)}")

# A number from each form: sigmoid'(0) from sp.diff's, and from a*(1 - a) at a = sigmoid(0).
s = activation("sigmoid")
a0 = s.f.subs(s.z, 0)
print(f"sigmoid'(0) = {s.fprime.subs(s.z, 0)}; in a: a = sigmoid(0) = {a0}, a*(1 - a) = {s.fprime_a.subs(s.a, a0)}")
