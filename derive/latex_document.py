"""The document: every formula of a network's derivation as LaTeX math strings, from its Program."""
import re

import sympy as sp

from . import naming
from .backprop import Derivation, _within, softmax_steps
from .errors import DerivationError
from .naming import A, X, Y, YHAT, YSUM
from .spec import Network
from .latex_curvature import curvature_section
from .latex_expanded import expanded_section
from .latex_layout import WIDTH, Equation, _partial, _shape, _text, split_lines, visible_width
from .latex_printer import N, ROP, Z, at_layer, latex, symbol
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
                        weights=n_in * n_out, biases=n_out, W_shape=_shape(n_out, n_in)))
    return out


def _names_table(p: Pieces) -> list[tuple[str, str, str, str]]:
    """(code names, symbol, shape, meaning) for every kind of array the derivation names."""
    L = p.L
    labels = p.network.loss_entry.target == "labels"

    def listed(names):
        return ", ".join(names) if len(names) <= 3 else f"{names[0]}, ..., {names[-1]}"

    def each(f):
        return listed([f(l) for l in range(1, L + 1)])
    hidden = listed([f"{naming.delta(l + 1)} @ {naming.weight(l + 1)}" for l in range(1, L)])
    rows = [
        ("x", r"x = a^{(0)}", r"\left(n, n_0\right)", "inputs, one example per row"),
        (each(naming.weight), r"W^{(l)}", r"\left(n_l, n_{l-1}\right)", "weights of layer l"),
        (each(naming.bias), r"b^{(l)}", r"\left(n_l,\right)", "biases of layer l"),
        (each(naming.pre), r"z^{(l)}", r"\left(n, n_l\right)", "pre-activations of layer l"),
        (each(naming.act), r"a^{(l)}", r"\left(n, n_l\right)", "activations (outputs) of layer l"),
        ("y", r"y", r"\left(n, n_L\right)", "targets" + (", the one-hot rows of the integer labels" if labels else "")),
    ]
    if hidden:
        rows.append((hidden, r"g^{(l)}", r"\left(n, n_l\right)", "upstream gradient dL/da of hidden layer l"))
    rows += [
        (each(naming.delta), r"\delta^{(l)}", r"\left(n, n_l\right)", "dL/dz of layer l"),
        (each(lambda l: naming.grad(naming.weight(l))), r"\mathrm{d}W^{(l)}", r"\left(n_l, n_{l-1}\right)",
         "dL/dW of layer l"),
        (each(lambda l: naming.grad(naming.bias(l))), r"\mathrm{d}b^{(l)}", r"\left(n_l,\right)", "dL/db of layer l"),
    ]
    if p.program.rforward:
        u = symbol("u")
        rows += [
            (each(lambda l: f'{naming.DIRECTIONS}["{naming.weight(l)}"]'), latex(symbol(naming.direction("W{l}"))),
             r"\left(n_l, n_{l-1}\right)", "direction V, weights of layer l"),
            (each(lambda l: f'{naming.DIRECTIONS}["{naming.bias(l)}"]'), latex(symbol(naming.direction("b{l}"))),
             r"\left(n_l,\right)", "direction V, biases of layer l"),
            (", ".join([naming.rop(n) for n in (naming.pre(1), naming.delta(1), naming.grad(naming.weight(1)))] + ["..."]),
             r"%s\{%s\}" % (ROP, latex(u)), r"\text{as }" + latex(u), "derivative of u along V"),
        ]
    return rows


def _forward(p: Pieces) -> Equation:
    net, eqs = p.network, []
    for l in range(1, p.L + 1):
        mat, bias = p.forward(l)
        z, a = symbol(naming.pre(l)), symbol(naming.act(l))
        how = _text("row by row") if net.is_vector(l) else _text("elementwise")
        eqs.append(Equation([(latex(z), "= %s + %s" % (latex(mat), latex(bias)), _shape(N, net.sizes[l])),
                             (latex(a), "= " + _fn(net, l, latex(z)), how)]))
    return Equation([row for eq in eqs for row in eq.rows])


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
    return [eqs[0], Equation([row for eq in eqs[1:] for row in eq.rows])]


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


def _activations(p: Pieces) -> list[dict]:
    net, out = p.network, []
    for l in range(1, p.L + 1):
        if net.is_vector(l):
            out.append(dict(index=l, vector=True, fname=function_tex(net, l)))
            continue
        piece = p.activation(l)
        gen = {piece.z: Z, piece.a: sp.Symbol("a", real=True)}
        f, fp = piece.f.xreplace(gen), piece.fprime.xreplace(gen)
        eq = Equation.chain(_fn(net, l, "z"), f) + Equation.chain(
            _fn(net, l, "z", prime=True), fp, *([piece.fprime_a.xreplace(gen)] if piece.fprime_a is not None else []),
            note=(r"a = %s" % _fn(net, l, "z")) if piece.fprime_a is not None else "")
        shared = None
        if piece.shared:
            shared = Equation([(latex(t), "= " + latex(e), "") for t, e in piece.shared]
                              + [(_fn(net, l, latex(piece.z), prime=True), "= " + latex(piece.factor), "")])
        out.append(dict(index=l, vector=False, fname=function_tex(net, l), activation=piece.name,
                        formula=piece.formula_text, eq=eq, rewritten=piece.fprime_a is not None,
                        shared=shared, constant=not fp.free_symbols))
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


def _instance(expr: sp.Expr, L: int) -> sp.Expr:
    """The softmax instance's z1, y1 ... as elements of layer L's arrays."""
    ren = {}
    for sym in expr.free_symbols:
        m = re.fullmatch(r"([zyp])(\d+)", sym.name)
        if m:
            base = {"z": naming.pre(L), "y": "y", "p": naming.act(L)}[m.group(1)]
            ren[sym] = sp.IndexedBase(symbol(base))[int(m.group(2))]
    return expr.xreplace(ren)


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
            steps.append(Equation.chain("", expanded, final, note=note))
        raw_note = Equation.chain(_partial(ell, latex(sp.IndexedBase(symbol(naming.pre(L)))[1])),
                                  _instance(out.raw, L))
    batch = _over_n(latex(symbol(naming.delta(L))), p.delta(L), _shape(N, net.sizes[L]))
    if out.kind == "jvp":
        batch = Equation.chain(latex(symbol(f"g{L}")), p.upstream(L), note=_text("elementwise")) + batch
    return dict(kind=out.kind, cancelled=out.in_a is not None, vector=net.is_vector(L), steps=Equation([row for eq in steps for row in eq.rows]), raw=raw_note, batch=batch,
                condition=None if out.condition is None else latex(out.condition))


NOTED = 40    # glyphs of math on a line that also carries a note


def _over_n(lhs: str, value: sp.Expr, note: str) -> Equation:
    """lhs = value, a long (sum) / n written 1/n (...) over several lines (a fraction cannot break)."""
    single = Equation.chain(lhs, value, note=note)
    if len(single.rows) > 1 or visible_width(single.rows[0][1]) <= WIDTH or isinstance(value, sp.MatrixExpr):
        return single
    inner = value * N
    if inner.has(N) or not isinstance(inner, sp.Add):
        return single
    lines = split_lines(inner, WIDTH - 8)
    lines[0] = r"\frac{1}{n} \Bigl(" + lines[0]
    lines[-1] += r"\Bigr)"
    return Equation([(lhs if i == 0 else "", ("= " if i == 0 else r"\quad ") + line, note if i == len(lines) - 1 else "")
                     for i, line in enumerate(lines)])


def _recurrence(p: Pieces) -> list[dict]:
    net, out = p.network, []
    for l in range(p.L - 1, 0, -1):
        g = symbol(f"g{l}")
        delta = symbol(naming.delta(l))
        eq = Equation.chain(latex(g), latex(p.upstream(l)), note=_shape(N, net.sizes[l]))
        if net.is_vector(l):
            eq = eq + Equation.chain(latex(delta), p.delta(l))
        else:
            eq = eq + Equation.chain(latex(delta), r"%s \odot %s" % (latex(g), _fn(net, l, latex(symbol(naming.pre(l))),
                                                                                   prime=True)), p.delta(l))
        out.append(dict(index=l, eq=eq))
    return out


def _gradients(p: Pieces) -> Equation:
    net, rows = p.network, []
    for l in range(1, p.L + 1):
        W, b = symbol(naming.weight(l)), symbol(naming.bias(l))
        dW, db = symbol(naming.grad(naming.weight(l))), symbol(naming.grad(naming.bias(l)))
        for param, grad, data, shape in ((W, dW, p.dW(l), _shape(net.sizes[l], net.sizes[l - 1])),
                                         (b, db, p.db(l), _shape(net.sizes[l]))):
            extra = p.penalty_gradient(param.name)
            tex = latex(data) + ("" if extra is None else " + " + latex(extra))
            rows.append((_partial("L", latex(param)), "= %s = %s" % (latex(grad), tex), shape))
    return Equation(rows)


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
