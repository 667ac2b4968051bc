"""The document: every formula of a network's derivation as LaTeX math strings, from its Program."""
import re

import sympy as sp

from . import naming
from .activations import softmax_instance
from .backprop import _INSTANCE, Derivation, _within, softmax_steps
from .elementwise import diff
from .errors import DerivationError
from .naming import A, X, Y, YHAT, YSUM
from .nodes import Like, unstable
from .spec import Network
from .statements import SCALE, array
from .latex_curvature import curvature_section
from .latex_expanded import expanded_section
from .latex_layout import WIDTH, Equation, _group, _pack, _parts, _partial, _text, space, visible_width
from .latex_printer import N, ROP, Z, NamePrinter, at_layer, latex, symbol
from .pieces import Pieces, function_tex


# --- the whole document, as LaTeX math strings -------------------------------------------------------

def _fn(net: Network, l: int, arg: str, prime: bool = False) -> str:
    return r"%s%s\left(%s\right)" % (function_tex(net, l), "'" if prime else "", arg)


def _params_tex(layer) -> str:
    return ", ".join(r"\%s = %s" % (k, latex(sp.nsimplify(v) if float(v) == int(v) else sp.Float(v, 6)))
                     if k in ("alpha", "beta") else r"\mathrm{%s} = %s" % (k, v)
                     for k, v in sorted(layer.params.items()))


def _ordered(*factors) -> str:
    """A chain-rule product, factor by factor, in the order written (SymPy would reorder a Mul)."""
    return r" \cdot ".join(latex(f) if not isinstance(f, (sp.Add, sp.Piecewise)) else r"\left(%s\right)" % latex(f)
                           for f in factors)


def _layers_info(p: Pieces) -> list[dict]:
    net = p.network
    out = []
    for l, layer in enumerate(net.layers, start=1):
        n_in, n_out = net.sizes[l - 1], net.sizes[l]
        out.append(dict(index=l, units=n_out, n_in=n_in, activation=layer.activation, formula=layer.formula,
                        params=_params_tex(layer), fname=function_tex(net, l), vector=net.is_vector(l),
                        weights=n_in * n_out, biases=n_out, W_shape=r"%d \times %d" % (n_out, n_in)))
    return out


def _names_table(p: Pieces) -> list[tuple[list[str], str, str, str]]:
    """(code names, symbol, shape, meaning) for every kind of array the derivation names; the code
    names a list (a line may break between two of them, never inside one)."""
    L = p.L
    labels = p.network.loss_entry.target == "labels"

    def listed(names):
        return names if len(names) <= 3 else [names[0], "...", names[-1]]

    def each(f):
        return listed([f(l) for l in range(1, L + 1)])
    hidden = listed([f"{naming.delta(l + 1)} @ {naming.weight(l + 1)}" for l in range(1, L)])
    batch, weights, biases = space(N, "n_l"), space("n_l", "n_{l-1}"), space("n_l")
    rows = [
        (["x"], r"x = a^{(0)}", space(N, "n_0"), "inputs, one example per row"),
        (each(naming.weight), r"W^{(l)}", weights, "weights of layer l"),
        (each(naming.bias), r"b^{(l)}", biases, "biases of layer l"),
        (each(naming.pre), r"z^{(l)}", batch, "pre-activations of layer l"),
        (each(naming.act), r"a^{(l)}", batch, "activations (outputs) of layer l"),
        (["y"], r"y", space(N, "n_L"), "targets" + (", the one-hot rows of the integer labels" if labels else "")),
    ]
    if hidden:
        rows.append((hidden, r"g^{(l)}", batch, "upstream gradient dL/da of hidden layer l"))
    rows += [
        (each(naming.delta), r"\delta^{(l)}", batch, "dL/dz of layer l"),
        (each(lambda l: naming.grad(naming.weight(l))), r"\mathrm{d}W^{(l)}", weights, "dL/dW of layer l"),
        (each(lambda l: naming.grad(naming.bias(l))), r"\mathrm{d}b^{(l)}", biases, "dL/db of layer l"),
    ]
    temps = sorted({s.name for s in p.program.forward if _is_temp(s.name)})
    if temps:
        rows.append((listed(temps), r"t^{(l)}_{i}", batch, "temporaries of layer l the code keeps (see its activation)"))
    if p.program.rforward:
        u = symbol("u")
        rows += [
            (each(lambda l: f'{naming.DIRECTIONS}["{naming.weight(l)}"]'), latex(symbol(naming.direction("W{l}"))),
             weights, "direction V, weights of layer l"),
            (each(lambda l: f'{naming.DIRECTIONS}["{naming.bias(l)}"]'), latex(symbol(naming.direction("b{l}"))),
             biases, "direction V, biases of layer l"),
            ([naming.rop(n) for n in (naming.pre(1), naming.delta(1), naming.grad(naming.weight(1)))] + ["..."],
             r"%s\{%s\}" % (ROP, latex(u)), r"\text{as }" + latex(u), "derivative of u along V"),
        ]
    return rows


def _is_temp(name: str) -> bool:
    return bool(re.fullmatch(r"t\d+_\d+", name))


def _in(name: str, *dims) -> str:
    r"""A note naming where the value lives: z^{(1)} \in \mathbb{R}^{n \times 2}."""
    return r"%s \in %s" % (latex(symbol(name)), space(*dims))


def _forward(p: Pieces) -> Equation:
    net, eqs = p.network, []
    for l in range(1, p.L + 1):
        mat, bias = p.forward(l)
        z, a = symbol(naming.pre(l)), symbol(naming.act(l))
        how = _text("row by row") if net.is_vector(l) else _text("elementwise")
        eqs.append(Equation([(latex(z), "= %s + %s" % (latex(mat), latex(bias)), _in(naming.pre(l), N, net.sizes[l])),
                             (latex(a), "= " + _fn(net, l, latex(z)), how)]))
    return Equation.stack(eqs)


def _forward_index(d: Derivation) -> Equation:
    """Seed 002's per-unit form, from the derivation's indexed steps, in layer l's names."""
    s = d.indexed["symbols"]
    ren = {s["w"]: sp.IndexedBase(symbol("W{l}")), s["a"]: sp.IndexedBase(symbol("a{l-1}")),
           s["b"]: sp.IndexedBase(symbol("b{l}")), s["n"]: sp.Symbol("n_{l-1}")}
    u = d.indexed["u"].xreplace(ren)
    total = next(t for t in u.args if isinstance(t, sp.Sum))
    rest = u - total
    k = s["k"]
    zk = sp.IndexedBase(symbol("z{l}"))[k]
    ak = sp.IndexedBase(symbol("a{l}"))[k]
    return Equation([(latex(zk), "= %s + %s" % (latex(total), latex(rest)), ""),
                     (latex(ak), r"= f_l\left(%s\right)" % latex(zk), "")])


def _index_backprop(d: Derivation) -> list[Equation]:
    """dl/dW, dl/db, dl/da of one example in the per-unit form, each sum done by SymPy."""
    s = d.indexed["symbols"]
    k, q, r = s["k"], s["q"], s["r"]
    m = sp.Symbol("n_l", integer=True, positive=True)
    ren = {s["w"]: sp.IndexedBase(symbol("W{l}")), s["a"]: sp.IndexedBase(symbol("a{l-1}")),
           s["b"]: sp.IndexedBase(symbol("b{l}")), s["n"]: sp.Symbol("n_{l-1}")}
    delta = sp.IndexedBase(symbol("delta{l}"))
    z = sp.IndexedBase(symbol("z{l}"))
    W, a_prev = ren[s["w"]], ren[s["a"]]
    du_dw, du_db, du_da = (d.indexed[key].xreplace(ren) for key in ("du_dw", "du_db", "du_da"))
    ell = r"\ell"
    eqs = [
        Equation([(_partial(latex(z[k]), latex(W[q, r])), "= " + latex(du_dw), ""),
                  (_partial(latex(z[k]), latex(ren[s["b"]][q])), "= " + latex(du_db), ""),
                  (_partial(latex(z[k]), latex(a_prev[r])), "= " + latex(du_da), "")]),
    ]
    for target, step in ((W[q, r], du_dw), (ren[s["b"]][q], du_db)):
        total = sp.Sum(delta[k] * step, (k, 1, m))
        eqs.append(Equation.chain(_partial(ell, latex(target)), latex(total), latex(_within(total.doit()))))
    back = sp.Sum(delta[k] * du_da, (k, 1, m))
    eqs.append(Equation.chain(_partial(ell, latex(a_prev[r])), latex(back)))
    below = sp.IndexedBase(symbol("delta{l-1}"))[r]
    zr = sp.IndexedBase(symbol("z{l-1}"))[r]
    eqs.append(Equation.chain(latex(below), r"%s \cdot f_{l-1}'\left(%s\right)" % (_partial(ell, latex(a_prev[r])),
                                                                                  latex(zr)),
                              r"f_{l-1}'\left(%s\right) %s" % (latex(zr), latex(back))))
    return [eqs[0], Equation.stack(eqs[1:])]


def _loss(p: Pieces) -> dict:
    d, net = p.derivation, p.network
    L, K_out = p.L, net.sizes[-1]
    k, i = sp.symbols("k i", integer=True, positive=True)
    a = sp.IndexedBase(symbol(naming.act(L)))
    y = sp.IndexedBase(symbol("y"))
    term = d.loss.element.xreplace({YHAT: a[k], Y: y[k]})
    per = sp.Sum(term, (k, 1, K_out)) if K_out > 1 else term.xreplace({k: 1})
    if K_out > 1 and term.could_extract_minus_sign():
        per = -sp.Sum(-term, (k, 1, K_out))
    ell = r"\ell\left(%s, y\right)" % latex(symbol(naming.act(L)))
    eqs = [Equation.chain(ell, per),
           Equation.chain("L", r"\frac{1}{n} \sum_{i=1}^{n} \ell\left(%s_{i}, y_{i}\right)"
                          % latex(symbol(naming.act(L))))]
    eqs = [eqs[0] + eqs[1]]
    out = d.output
    computed = None
    if out.loss_from == "logits":
        computed = Equation.chain(r"\ell_k", at_layer(out.loss_expr, L).xreplace(
            {symbol(naming.pre(L)): sp.IndexedBase(symbol(naming.pre(L)))[k], symbol("y"): y[k]}))
    penalty = None
    if p.program.penalised:
        # L = the data term + the penalty, whose terms are the Program's penalty statements
        eqs = [Equation.chain("L", r"\frac{1}{n} \sum_{i=1}^{n} \ell\left(%s_{i}, y_{i}\right) + \Omega"
                              % latex(symbol(naming.act(L))))]
        eqs[0] = Equation.chain(ell, per) + eqs[0]
        terms = []
        for s in p.program.penalty:
            coeff, total = s.expr.as_coeff_Mul()
            terms.append(("" if coeff == 1 else latex(coeff) + " ") + latex(total))
        penalty = Equation([(r"\Omega" if i == 0 else "", ("= " if i == 0 else r"\quad + ") + t, "")
                            for i, t in enumerate(terms)])
    settings = ", ".join(r"%s = %s" % (_param_name(k), latex(sp.nsimplify(v) if float(v) == int(v) else sp.Float(v, 6)))
                         for k, v in d.loss.settings)
    return dict(eqs=eqs, computed=computed, loss_from=out.loss_from, penalty=penalty, formula=d.loss.formula,
                settings=settings)


def _param_name(name: str) -> str:
    """A parameter's name in math: a Greek letter's own symbol (delta -> \\delta), else upright text."""
    from sympy.printing.latex import greek_letters_set
    return "\\" + name if name.lower() in greek_letters_set else r"\mathrm{%s}" % name.replace("_", r"\_")


def _definition(f: sp.Expr) -> sp.Expr | None:
    """What an activation is, to show after `f(z) =`: its formula, or where the formula is the named function
    itself (tanh(z) = tanh(z) says nothing) SymPy's rewrite of it in exponentials or cases; None if neither."""
    if not (isinstance(f, sp.Function) and f.args == (Z,)):
        return f
    for form in (sp.exp, sp.Piecewise):
        rewritten = f.rewrite(form)
        if rewritten != f:
            return rewritten
    return None


def _temporaries(p: Pieces, l: int) -> Equation | None:
    """Layer l's temporaries t{l}_i as the Program defines them, and the statements of the forward and
    backward passes that read them, composed, as the code computes them (None if it has none)."""
    prog = p.program
    temps = [s for s in prog.forward if _is_temp(s.name) and s.name.startswith(f"t{l}_")]
    if not temps:
        return None
    names = {s.target for s in temps}
    kept = {s.name for s in temps}

    def shown(expr):
        expr = expr.replace(lambda e: isinstance(e, Like), lambda e: e.args[0]).xreplace({SCALE: 1 / N})
        return unstable(expr.xreplace({array(naming.UPSTREAM): symbol(f"g{l}")}))

    def defined(expr):
        # a mask (t = z > 0, a boolean array) in the document's Iverson bracket
        return r"\left[%s\right]" % latex(expr) if isinstance(expr, sp.Rel) else shown(expr)
    rows = [Equation.chain(latex(s.target), defined(s.expr)) for s in temps]
    readers = [s.name for s in prog.forward + prog.backward if s.name not in kept and s.expr.free_symbols & names]
    for name in dict.fromkeys(readers):
        value = p.composed(name, l) if name in {s.name for s in prog.backward} else prog.defining(name)[-1].expr
        rows.append(Equation.chain(latex(symbol(name)), shown(value)))
    return sum(rows[1:], rows[0])


def _activations(p: Pieces) -> list[dict]:
    net, out = p.network, []
    for l in range(1, p.L + 1):
        if net.is_vector(l):
            out.append(dict(index=l, vector=True, fname=function_tex(net, l)))
            continue
        piece = p.activation(l)
        gen = {piece.z: Z, piece.a: sp.Symbol("a", real=True)}
        f, fp = piece.f.xreplace(gen), piece.fprime.xreplace(gen)
        defined = _definition(f)
        eq = Equation.chain(_fn(net, l, "z"), defined) if defined is not None else Equation([])
        eq = eq + Equation.chain(
            _fn(net, l, "z", prime=True), fp, *([piece.fprime_a.xreplace(gen)] if piece.fprime_a is not None else []),
            note=(r"a = %s" % _fn(net, l, "z")) if piece.fprime_a is not None else "")
        out.append(dict(index=l, vector=False, fname=function_tex(net, l), activation=piece.name,
                        formula=piece.formula_text, eq=eq, rewritten=piece.fprime_a is not None,
                        temporaries=_temporaries(p, l), constant=not fp.free_symbols))
    return out


def _softmax_section(p: Pieces) -> dict | None:
    if not any(p.network.is_vector(l) for l in range(1, p.L + 1)):
        return None
    s = softmax_steps()
    ak = s.a[s.k]
    return dict(
        formula=Equation.chain(latex(ak), s.formula.xreplace({s.m: s.j})),
        jacobian=Equation.chain(_partial(latex(ak), latex(sp.IndexedBase("z")[s.j])), s.raw,
                                latex(s.jacobian), note=_text("with ") + r"e^{z_i} = a_i \sum_m e^{z_m}"),
        jvp=Equation.chain(r"\sum_{k=1}^{K} g_k %s" % _partial(latex(ak), latex(sp.IndexedBase("z")[s.j])),
                           s.jvp),
    )


SHOWN_WIDTH = 4    # a softmax output up to this wide has the loss's derivative written out on its own width


def _instance(expr: sp.Expr, L: int | None) -> sp.Expr:
    """A softmax instance's z1, y1, p1 ... as elements of layer L's arrays (z^{(L)}_1 ...), or, for L None,
    of an instance of its own (z_1 ...)."""
    ren = {}
    for sym in expr.free_symbols:
        m = re.fullmatch(r"([zyp])(\d+)", sym.name)
        if m:
            base = {"z": naming.pre(L), "y": "y", "p": naming.act(L)}[m.group(1)] if L else m.group(1)
            ren[sym] = sp.IndexedBase(symbol(base))[int(m.group(2))]
    return expr.xreplace(ren)


def _softmax_raw(d: Derivation, K: int) -> sp.Expr:
    """dl/dz_1 of the loss of a softmax of K outputs, by sp.diff; a fused output delta is checked against it.

    The derivation found the fused form on a 3-output instance (and checked it at a second index);
    here the same form must follow on the network's own width, or the document says nothing.
    """
    z = sp.symbols(f"z1:{K + 1}", real=True)
    y = sp.symbols(f"y1:{K + 1}", real=True)
    p = sp.symbols(f"p1:{K + 1}", positive=True)
    total = sum(d.loss.element.subs({YHAT: pk, Y: yk}) for pk, yk in zip(softmax_instance(list(z)), y))
    raw = diff(total, z[0])
    out = d.output
    if out.kind == "fused":
        one_hot = {y[-1]: 1 - sum(y[:-1])} if out.condition is not None else {}
        # z_k = log p_k represents any softmax output (softmax is shift-invariant), with sum(p) = 1
        got = raw.subs(one_hot).subs({zk: sp.log(pk) for zk, pk in zip(z, p)}).subs(p[-1], 1 - sum(p[:-1]))
        want = out.expr.xreplace({A: p[0], Y: y[0], YSUM: sum(y)}).subs(one_hot)
        if sp.simplify(got - want) != 0:
            raise DerivationError(f"{d.network.name}: the fused softmax delta {out.expr} does not follow from the "
                                  f"derivative of the loss on the network's {K} outputs")
    return raw


def _output(p: Pieces) -> dict:
    d, net, L = p.derivation, p.network, p.L
    out = d.output
    z, a, y = Z, sp.Symbol("a", real=True), sp.Symbol("y", real=True)
    gen = {X: z, A: a, Y: y}
    steps, raw_note = [], None
    ell = r"\ell"
    if not net.is_vector(L):
        ew = d.layers[-1].elementwise
        factor = ew.backward_factor.xreplace(gen)
        dl = out.dloss_da.xreplace(gen)
        width = NOTED if out.kind == "fused" else WIDTH      # a fused delta's rows share a line with a note
        chain = [_partial(ell, "a") + _partial("a", "z"),
                 _ordered(dl, factor) if visible_width(_ordered(dl, factor)) <= width else dl * factor]
        in_a = out.expr if out.in_a is None else out.in_a
        if out.kind == "fused":
            product = sp.factor(sp.simplify(dl * factor))
            if sp.simplify(product - in_a.xreplace(gen)) != 0:
                raise DerivationError(f"the fused output delta {in_a} does not match the chain rule {product}")
        chain.append(in_a.xreplace(gen))
        steps.append(Equation.chain(r"\delta = " + _partial(ell, "z"), *chain,
                                    note=_text("fused, simplified by SymPy") if out.kind == "fused" else "",
                                    width=width))
        if out.logs:
            steps.append(Equation.chain("", out.expr.xreplace(gen), note=_text("the logs from the logits:"),
                                        width=NOTED))
            steps += [Equation.chain(latex(u.xreplace(gen)), v.xreplace(gen), width=NOTED) for u, v in out.logs]
        raw = Equation.chain(_partial(ell, "z"), out.raw.xreplace(gen))
        if out.kind == "fused" and ew.inverse is not None and out.in_a is None:
            raw = raw + Equation.chain("", in_a.xreplace(gen), note=r"z = %s" % latex(ew.inverse.xreplace(gen)))
        raw_note = raw
    else:
        s = softmax_steps()
        j, k = s.j, s.k
        ak, aj = s.a[k], s.a[j]
        g_of = out.dloss_da.xreplace({A: ak, Y: s.y[k]})
        steps.append(Equation.chain(r"g_k = " + _partial(ell, latex(ak)), g_of))
        steps.append(Equation.chain(r"\delta_j = " + _partial(ell, latex(sp.IndexedBase("z")[j])),
                                    latex(s.jvp_sum), s.jvp))
        if out.kind == "fused":
            with_g = s.jvp.replace(lambda e: isinstance(e, sp.Indexed) and e.base == s.g,
                                   lambda e: out.dloss_da.xreplace({A: s.a[e.indices[0]], Y: s.y[e.indices[0]]}))
            expanded = sp.factor_terms(sp.expand(with_g))
            cond = out.condition
            ysum = sp.Sum(s.y[k], (k, 1, s.K))
            used = expanded.replace(
                lambda e: isinstance(e, sp.Sum) and isinstance(e.function, sp.Indexed) and e.function.base == s.y,
                lambda e: cond.rhs if cond is not None else YSUM)
            final = out.expr.xreplace({A: aj, Y: s.y[j]})
            if sp.simplify(used - final) != 0:
                raise DerivationError(f"the fused softmax delta {out.expr} does not follow from {expanded}")
            if cond is not None:
                note = _text("using ") + latex(sp.Eq(ysum, cond.rhs))
            else:
                final = final.xreplace({YSUM: ysum})
                note = _text("for any targets (their sum is not assumed to be 1)")
            shown = [expanded, final] if latex(expanded) != latex(final) else [final]
            steps.append(Equation.chain("", *shown, note=note))
        K = net.sizes[L]
        own = 2 <= K <= SHOWN_WIDTH
        raw = _softmax_raw(d, K) if own else out.raw
        first = sp.IndexedBase(symbol(naming.pre(L)) if own else sp.Symbol("z"))[1]
        raw_note = Equation.chain(_partial(ell, latex(first)), _instance(raw, L if own else None))
        instance = dict(own=own, width=K if own else _INSTANCE, derived=_INSTANCE)
    batch = _over_n(latex(symbol(naming.delta(L))), p.delta(L), _in(naming.delta(L), N, net.sizes[L]))
    if out.kind == "jvp":
        batch = Equation.chain(latex(symbol(f"g{L}")), p.upstream(L), note=_text("elementwise")) + batch
    return dict(kind=out.kind, cancelled=out.in_a is not None, vector=net.is_vector(L), steps=Equation.stack(steps),
                raw=raw_note, batch=batch, instance=instance if net.is_vector(L) else None,
                condition=None if out.condition is None else latex(out.condition))


NOTED = 40    # glyphs of math on a line that also carries a note


def _over_n(lhs: str, value: sp.Expr, note: str) -> Equation:
    """lhs = value, a long (sum) / n written 1/n (...) over several lines (a fraction cannot break)."""
    width = WIDTH - visible_width(note)
    single = Equation.chain(lhs, value, note=note, width=width)
    if len(single.rows) > 1 or visible_width(single.rows[0][1]) <= width or isinstance(value, sp.MatrixExpr):
        return single
    inner = value * N
    if inner.has(N) or not isinstance(inner, sp.Add):
        return single
    printer = NamePrinter()
    lines = _pack(_group(r"\frac{1}{n}", _parts(inner, printer, width - 8), printer.doprint(inner)), width - 8)
    return Equation([(lhs if i == 0 else "", ("= " if i == 0 else r"\quad ") + line, note if i == len(lines) - 1 else "")
                     for i, line in enumerate(lines)])


def _recurrence(p: Pieces) -> list[dict]:
    net, out = p.network, []
    for l in range(p.L - 1, 0, -1):
        g = symbol(f"g{l}")
        delta = symbol(naming.delta(l))
        eq = Equation.chain(latex(g), latex(p.upstream(l)), note=_in(f"g{l}", N, net.sizes[l]))
        if net.is_vector(l):
            eq = eq + Equation.chain(latex(delta), p.delta(l))
        else:
            eq = eq + Equation.chain(latex(delta), r"%s \odot %s" % (latex(g), _fn(net, l, latex(symbol(naming.pre(l))),
                                                                                   prime=True)), p.delta(l))
        out.append(dict(index=l, eq=eq))
    return out


def _gradients(p: Pieces) -> Equation:
    net, eqs = p.network, []
    for l in range(1, p.L + 1):
        W, b = symbol(naming.weight(l)), symbol(naming.bias(l))
        dW, db = symbol(naming.grad(naming.weight(l))), symbol(naming.grad(naming.bias(l)))
        rows = []
        for param, grad, data, dims in ((W, dW, p.dW(l), (net.sizes[l], net.sizes[l - 1])),
                                        (b, db, p.db(l), (net.sizes[l],))):
            extra = p.penalty_gradient(param.name)
            tex = latex(data) + ("" if extra is None else " + " + latex(extra))
            rows.append((_partial("L", latex(param)), "= %s = %s" % (latex(grad), tex), _in(grad.name, *dims)))
        eqs.append(Equation(rows))
    return Equation.stack(eqs)


def typeset(d: Derivation, expanded: bool = False) -> dict:
    """Every formula of the document for `d`, as LaTeX math strings (and Equation rows).

    Text fields (name, activation names, formula text) are returned raw: the caller escapes them
    for its output format.
    """
    p = Pieces(d)
    prog = p.program
    d = prog.derivation
    net = p.network
    layers = _layers_info(p)
    doc = dict(
        name=net.name, describe=net.describe(), loss=net.loss, loss_title=d.loss.title, target=d.loss.target,
        sizes=net.sizes, depth=p.L, layers=layers,
        weights=sum(x["weights"] for x in layers), biases=sum(x["biases"] for x in layers),
        names=_names_table(p), forward=_forward(p), forward_index=_forward_index(d),
        loss_eqs=_loss(p), activations=_activations(p), softmax=_softmax_section(p),
        index_backprop=_index_backprop(d), output=_output(p), recurrence=_recurrence(p),
        gradients=_gradients(p), curvature=curvature_section(p),
        expanded=expanded_section(prog) if expanded else None,
    )
    doc["params"] = doc["weights"] + doc["biases"]
    return doc
