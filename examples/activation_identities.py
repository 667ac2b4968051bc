"""Seed 001's derivative identities, derived by nnderive: sigmoid' = sigma (1 - sigma), tanh' = 1 - tanh^2."""
import sympy as sp

from derive.latex import activation, latex

for name in ("sigmoid", "tanh", "softplus", "relu"):
    act = activation(name)
    print(f"{name}(z) = {act.f}")
    print(f"  {name}'(z) from sp.diff: {act.fprime}")
    if act.fprime_a is None:
        print(f"  {name}' has no form in a = {name}(z)")
        continue
    # The identity holds for every z: substitute a = f(z) back and simplify the difference.
    holds = sp.simplify(act.fprime_a.subs(act.a, act.f) - act.fprime) == 0
    print(f"  {name}'(z) in a = {name}(z): {act.fprime_a}  (identity holds: {holds})")
    print(f"  LaTeX: {latex(act.fprime_a)}")

# A number: sigmoid'(0) = 1/4, from either form.
s = activation("sigmoid")
print(f"sigmoid'(0) = {s.fprime.subs(s.z, 0)} = {s.fprime_a.subs(s.a, s.f.subs(s.z, 0))}")
