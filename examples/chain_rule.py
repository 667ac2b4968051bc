"""Seed 001's chain-rule example: h(x) = f(g(x)) with f(x) = x^2, g(x) = 5x + 3, so h'(x) = 50x + 30."""
import sympy as sp

from derive.latex import latex

x = sp.Symbol("x", real=True)
f = sp.Lambda(x, x**2)
g = sp.Lambda(x, 5 * x + 3)
h = f(g(x))

# The chain rule, factor by factor: h'(x) = f'(g(x)) * g'(x).
f_prime = sp.diff(f(x), x)
g_prime = sp.diff(g(x), x)
chain = f_prime.subs(x, g(x)) * g_prime
direct = sp.expand(sp.diff(h, x))

print(f"h(x)  = {h}")
print(f"f'(x) = {f_prime}")
print(f"g'(x) = {g_prime}")
print(f"f'(g(x)) * g'(x) = {sp.factor(chain)} = {sp.expand(chain)}")
print(f"h'(x) = {direct}")
print(f"chain rule == direct derivative: {sp.expand(chain - direct) == 0}")
print(f"LaTeX: h'(x) = {latex(direct)}")
