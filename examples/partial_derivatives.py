"""Seed 001's partial derivatives: f(x, y) = x^2 y, its partials and its gradient vector."""
import sympy as sp

from derive.latex import latex

x, y = sp.symbols("x y", real=True)
f = x**2 * y

df_dx = sp.diff(f, x)          # y is held constant
df_dy = sp.diff(f, y)          # x is held constant
gradient = sp.Matrix([df_dx, df_dy])

print(f"f(x, y) = {f}")
print(f"df/dx = {df_dx}")
print(f"df/dy = {df_dy}")
print(f"grad f = {list(gradient)}")
print(f"grad f at (3, 2) = {list(gradient.subs({x: 3, y: 2}))}")
print(f"LaTeX: \\nabla f = {latex(gradient)}")
