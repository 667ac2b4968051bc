"""Network specs from TOML or Python, validated in one place: every spec error is raised here."""
import contextlib
import difflib
import functools
import keyword
import math
import os
import re
import stat
import sys
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

from .activations import ACTIVATIONS
from .errors import SpecError, SpecWarning, one_line
from .losses import LOSSES, TARGETS, Loss

# Names a spec may not take. The module's own API and helpers; modules it imports or sits beside
# (generated/optimizers.py, conftest.py for pytest); and, since a generated module is imported by
# its file name, every standard-library module (a generated os.py would shadow os for any program
# started next to it) and the names Windows reserves for devices.
RESERVED = ({"PARAM_SHAPES", "init_params", "forward", "backward", "loss", "loss_and_grad", "predict",
             "np", "numpy", "math", "sgd_step", "sympy", "mpmath", "jinja2", "derive", "codegen",
             "generated", "optimizers", "conftest", "setup", "nnderive",
             "sitecustomize", "usercustomize", "__main__"}   # site imports these from anywhere on sys.path
            | set(sys.stdlib_module_names)
            | {"con", "prn", "aux", "nul"} | {f"{dev}{i}" for dev in ("com", "lpt") for i in range(1, 10)})
MAX_NAME = 64          # characters: a module (file) name, a custom activation name
MAX_UNITS = 1_000_000
MAX_LAYERS = 64
MAX_PARAMS = 100_000_000   # weights and biases: 800 MB in float64
MAX_SPEC_BYTES = 1_000_000
PENALTY_KEYS = ("l2", "l1", "bias_l2", "bias_l1")   # weight penalties: of W (l2, l1) and of b (bias_l2, bias_l1)
MAX_PENALTY = 1e6
REQUIRED_KEYS = ("name", "inputs", "loss", "layers")
TOP_KEYS = REQUIRED_KEYS + PENALTY_KEYS
LAYER_KEYS = ("units", "activation", "formula") + PENALTY_KEYS
LOSS_KEYS = ("name", "formula", "target")        # a [loss] table; every other key is a parameter
MAX_LOSS_PARAMS = 8
MAX_LOSS_PARAM = 1e6     # |value| of a custom loss's parameter


@dataclass(frozen=True)
class Dense:
    """A fully connected layer: `units` outputs, then an activation (with its parameters).

    >>> Dense(3, "leaky_relu", alpha=0.1)
    Dense(units=3, activation='leaky_relu', params={'alpha': 0.1}, formula=None)
    """

    units: int
    activation: str = "identity"
    params: dict = field(default_factory=dict)
    formula: str | None = None
    penalty: dict = field(default_factory=dict)   # l2, l1 of W and bias_l2, bias_l1 of b (see PENALTY_KEYS)

    def __init__(self, units: int, activation: str = "identity", formula: str | None = None, **params):
        """Keyword arguments named like PENALTY_KEYS are the layer's weight penalties, the rest its
        activation's parameters: Dense(8, "relu", l2=1e-4), Dense(3, "leaky_relu", alpha=0.1)."""
        penalty = {k: params.pop(k) for k in PENALTY_KEYS if k in params}
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "activation", activation)
        object.__setattr__(self, "params", dict(params))
        object.__setattr__(self, "formula", formula)
        object.__setattr__(self, "penalty", penalty)

    def __repr__(self) -> str:
        shown = f"Dense(units={self.units!r}, activation={self.activation!r}, params={self.params!r}, " \
                f"formula={self.formula!r}"
        return shown + (f", penalty={self.penalty!r})" if self.penalty else ")")

    def resized(self, units: int) -> "Dense":
        """The same layer with `units` outputs."""
        return Dense(units, self.activation, self.formula, **self.params, **self.penalty)


@dataclass(frozen=True)
class Network:
    """A validated feed-forward network: inputs, dense layers, a loss.

    >>> net = Network("mlp_4_2_3", 4, [Dense(2, "relu"), Dense(3, "sigmoid")], loss="mse")
    >>> net.sizes
    [4, 2, 3]
    """

    name: str
    inputs: int
    layers: tuple
    loss: str
    source: str = "<python>"
    _text: str = field(default="", repr=False, compare=False)
    _formulas: dict = field(default_factory=dict, repr=False, compare=False, hash=False)
    # A custom loss: a formula in y_hat and y (loss names it), its parameters and its targets
    # ("values" unless "onehot" or "labels"); for a registry loss, loss_params are its parameters.
    loss_formula: str | None = None
    loss_params: dict = field(default_factory=dict)
    loss_target: str | None = None
    penalty: dict = field(default_factory=dict)   # every layer's penalties (PENALTY_KEYS); a layer's own win

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        validate(self)

    @property
    def sizes(self) -> list[int]:
        return [self.inputs] + [layer.units for layer in self.layers]

    @property
    def depth(self) -> int:
        return len(self.layers)

    def param_shapes(self) -> dict[str, tuple]:
        shapes = {}
        for l, (n_in, n_out) in enumerate(zip(self.sizes, self.sizes[1:]), start=1):
            shapes[f"W{l}"] = (n_out, n_in)
            shapes[f"b{l}"] = (n_out,)
        return shapes

    def activation_formula(self, l: int) -> sp.Expr:
        """The SymPy formula of layer l's activation (1-based), parameters bound."""
        layer = self.layers[l - 1]
        if layer.formula is not None:
            if l not in self._formulas:    # parsed once per network, however many consumers ask
                from .formula import parse_formula
                self._formulas[l] = parse_formula(layer.formula, self.source, _place(self, "formula", l))
            return self._formulas[l]
        return ACTIVATIONS[layer.activation].bind(**layer.params)

    def init_gain(self, l: int) -> float:
        """Layer l's weights start normal with variance gain / n_in (the registry entry's gain; 1 for a formula)."""
        layer = self.layers[l - 1]
        return 1 if layer.formula is not None else ACTIVATIONS[layer.activation].gain

    @property
    def loss_entry(self) -> Loss:
        """The loss, parameters bound: the registry's entry, or a custom loss parsed (safely) from its formula.

        >>> Network("h", 2, [Dense(1)], loss="huber", loss_params={"delta": 0.5}).loss_entry.settings
        (('delta', 0.5),)
        """
        if "loss" not in self._formulas:      # parsed once per network, however many consumers ask
            if self.loss_formula is None:
                entry = LOSSES[self.loss].bind(**self.loss_params)
            else:
                from .formula import parse_loss_formula
                element = parse_loss_formula(self.loss_formula, self.source, _loss_place(self, "formula"),
                                             self.loss_params)
                entry = Loss(self.loss, element, self.loss_target or "values", f"custom loss {self.loss}",
                             formula=self.loss_formula,
                             settings=tuple((k, float(v)) for k, v in self.loss_params.items()))
            self._formulas["loss"] = entry
        return self._formulas["loss"]

    def penalties(self, l: int) -> dict:
        """Layer l's weight penalties (1-based): {key: coefficient} for the nonzero ones of PENALTY_KEYS,
        the layer's own value where it gives one, else the network's."""
        own = self.layers[l - 1].penalty
        values = {k: own.get(k, self.penalty.get(k, 0)) for k in PENALTY_KEYS}
        return {k: v for k, v in values.items() if v}

    @property
    def penalised(self) -> bool:
        return any(self.penalties(l) for l in range(1, self.depth + 1))

    def is_vector(self, l: int) -> bool:
        layer = self.layers[l - 1]
        return layer.formula is None and ACTIVATIONS[layer.activation].vector

    def describe(self) -> str:
        """One line: 4 -> 2 (relu) -> 3 (sigmoid), loss mse (with a layer's penalties: 8 (relu, l2 0.01))."""
        parts = [str(self.inputs)]
        for l, layer in enumerate(self.layers, start=1):
            extra = "".join(f", {k} {v:g}" for k, v in self.penalties(l).items())
            parts.append(f"{layer.units} ({layer.activation}{extra})")
        settings = ", ".join(f"{k} {float(v):g}" for k, v in self.loss_params.items())
        return " -> ".join(parts) + f", loss {self.loss}" + (f" ({settings})" if settings else "")

    def with_widths(self, cap: int) -> "Network":
        """A copy with every hidden width cut to at most `cap` (the output width too if larger)."""
        import dataclasses
        layers = tuple(layer.resized(min(layer.units, cap)) for layer in self.layers)
        return dataclasses.replace(self, inputs=min(self.inputs, cap), layers=layers, _text="", _formulas={})


def _closest(word, options) -> list[str]:
    """The option `word` was most likely meant to be, as a list of one (or none)."""
    return difflib.get_close_matches(str(word).lower(), list(options), n=1)


def _suggest(word: str, options) -> str:
    match = _closest(word, options)
    return f"did you mean '{match[0]}'?" if match else "use one of: " + ", ".join(sorted(options))


def _show(value) -> str:
    """A value quoted in a message: its repr, short."""
    return one_line(repr(value), 60)


def _place(net: "Network", key: str, layer: int | None = None) -> str:
    """`line N, key` when the TOML text is known, else the key path (a long or odd key quoted short)."""
    shown = key if isinstance(key, str) and len(key) <= MAX_NAME and key.isprintable() else _show(key)
    path = shown if layer is None else f"layers[{layer}].{shown}"
    if not net._text or not isinstance(key, str):
        return path
    text = net._text
    if len(key) > MAX_NAME:                    # no regex built from a huge key: its first occurrence
        at = text.find(key)
        return f"line {text.count(chr(10), 0, at) + 1}, {path}" if at >= 0 else path
    k = re.escape(key)
    # One pass over the text (not a match per line): [[layers]] headers, `key =`, or a [key] table.
    pattern = re.compile(rf"^[ \t\f\v\r]*(?:(\[\[layers\]\])|({k}\s*=)|(\[\[?\s*{k}\s*\]))", re.M)
    table = 0
    for m in pattern.finditer(text):
        if m.group(1):
            table += 1
        elif (m.group(2) and table == (layer or 0)) or (m.group(3) and layer is None):
            return f"line {text.count(chr(10), 0, m.start()) + 1}, {path}"
    return path


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _exact(value):
    """A copy of value as exactly int, float or str when it is an instance of one (a subclass's
    __repr__ or __format__ would otherwise write its own text into the generated code); else value."""
    if type(value) in (bool, int, float, str):
        return value
    for kind in (int, float, str):      # bool cannot be subclassed
        if isinstance(value, kind):
            return getattr(kind, f"__{kind.__name__}__")(value)
    return value


def _normalize(net: Network) -> None:
    """Replace every field of net, and every layer, by a copy of exactly the built-in type it claims
    to be (Dense, int, float, str), so that what validate checks is what the generators print."""
    layers = net.layers
    if isinstance(layers, (list, tuple)):
        layers = tuple(_exact_layer(layer) if isinstance(layer, Dense) else layer for layer in layers)
    for attr, value in (("name", _exact(net.name)), ("inputs", _exact(net.inputs)), ("loss", _exact(net.loss)),
                        ("source", _exact(net.source)), ("layers", layers),
                        ("loss_formula", _exact(net.loss_formula)), ("loss_target", _exact(net.loss_target)),
                        ("loss_params", _exact_dict(net.loss_params)), ("penalty", _exact_dict(net.penalty))):
        object.__setattr__(net, attr, value)


def _exact_dict(d):
    """A copy of a dict with exact keys and values (anything else is left for validate to refuse)."""
    return {_exact(k): _exact(v) for k, v in dict.items(d)} if isinstance(d, dict) else d


def _exact_layer(layer: Dense) -> Dense:
    units, activation, formula = layer.units, layer.activation, layer.formula     # each read once
    params = layer.params
    params = {_exact(k): _exact(v) for k, v in dict.items(params)} if isinstance(params, dict) else params
    penalty = _exact_dict(getattr(layer, "penalty", {}))
    copy = Dense.__new__(Dense)
    for attr, value in (("units", _exact(units)), ("activation", _exact(activation)), ("params", params),
                        ("formula", _exact(formula)), ("penalty", penalty)):
        object.__setattr__(copy, attr, value)
    return copy


class _Missing:
    """A required key network_from_dict found missing (and reported): validate skips its checks."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


class _Outcome:
    """Whether the checks inside one `_Problems.check()` passed."""

    def __init__(self):
        self.ok = True

    def __bool__(self) -> bool:
        return self.ok


class _Problems:
    """The independent problems of one spec, collected so that one run reports every one, a line each.

        problems = _Problems()
        with problems.check() as units:   # a SpecError raised inside is kept, and the next check runs
            ...
        if units: ...                     # a check that means something only when that one passed
        problems.raise_any()
    """

    def __init__(self):
        self.errors = []

    @contextlib.contextmanager
    def check(self):
        outcome = _Outcome()
        try:
            yield outcome
        except SpecError as e:
            outcome.ok = False
            self.errors.extend(e.errors)

    def raise_any(self) -> None:
        """Raise one SpecError carrying every problem found, in the order of the file's lines."""
        if self.errors:
            raise SpecError.of(sorted(self.errors, key=_line_of)) from None


def _line_of(error: SpecError) -> float:
    """The line a problem names (`line N, ...`); after every line if none (a missing key). A spec
    given in Python names no lines: its problems keep the order they were found in."""
    m = re.match(r"line (\d+),", error.where)
    return int(m.group(1)) if m else math.inf


def validate(net: Network) -> None:
    """Raise SpecError for every independent problem in `net` (one line each), naming the place and the fix.

    First every field is replaced by a copy of exactly its built-in type (see _normalize). The checks
    that rest on others (the parameter count, the loss/output pairing, a custom loss at the outputs)
    run once those pass.
    """
    problems = _Problems()
    _validate(net, problems)
    problems.raise_any()


def _validate(net: Network, problems: _Problems) -> None:
    """validate's checks, adding each problem to `problems`; a field that is _MISSING is not checked."""
    _normalize(net)
    src = net.source

    def fail(key, what, fix, layer=None):
        raise SpecError(src, _place(net, key, layer), what, fix)

    if not isinstance(src, str) or not src.isprintable():   # every other message would quote it
        raise SpecError(one_line(src), "", "the spec's file name has control characters (it is copied into "
                        "the generated code)", "rename the file")
    if net.name is not _MISSING:
        with problems.check():
            _check_name(net, fail)
    if net.inputs is not _MISSING:
        with problems.check():
            if not _is_int(net.inputs) or not 1 <= net.inputs <= MAX_UNITS:
                fail("inputs", f"inputs must be a whole number from 1 to {MAX_UNITS}, got {_show(net.inputs)}",
                     "e.g. inputs = 4")
    if net.loss is not _MISSING:
        _check_loss_name(net, problems)
    _check_penalties(net.penalty, problems, lambda key, what, fix: fail(key, what, fix))
    if net.layers is not _MISSING:
        with problems.check() as layers:
            if not isinstance(net.layers, tuple) or not net.layers:
                fail("layers", "the network has no layers", "add at least one [[layers]] table with units and activation")
            if len(net.layers) > MAX_LAYERS:
                fail("layers", f"{len(net.layers)} layers is more than {MAX_LAYERS}", "use fewer layers")
        if layers:
            for l, layer in enumerate(net.layers, start=1):
                _check_layer(net, l, layer, problems, fail)
    if problems.errors:
        return          # what follows reads every field: meaningless until they are right
    with problems.check():
        params = sum(n_out * (n_in + 1) for n_in, n_out in zip(net.sizes, net.sizes[1:]))
        if params > MAX_PARAMS:
            fail("layers", f"the network has {params:,} weights and biases, more than {MAX_PARAMS:,}",
                 "use narrower layers")
    with problems.check():
        _check_pairing(net, fail)
        if net.loss_formula is not None:
            _check_custom_loss(net)
    if not problems.errors:
        _warn_unusual(net)


def _check_name(net: Network, fail) -> None:
    name_problem = _identifier_problem(net.name)
    if name_problem:
        fail("name", f"name {_show(net.name)} {name_problem}", 'use a Python identifier, e.g. name = "my_net"')
    if net.name in RESERVED or net.name.lower() in RESERVED or net.name.startswith("_"):
        fail("name", f"name '{net.name}' is reserved: it would shadow a module or the generated module's own "
             "functions", f"choose another name, e.g. name = \"{net.name.strip('_') or 'my'}_net\"")
    shadowed = _installed_module(net.name)
    if shadowed:
        fail("name", f"name '{net.name}' is an installed module ({shadowed}): a generated {net.name}.py would "
             "shadow it for any program started beside it", f"choose another name, e.g. name = \"{net.name}_net\"")


def _check_layer(net: Network, l: int, layer, problems: _Problems, fail) -> None:
    """Layer l's units, penalties and activation: independent of one another, a problem each."""
    if not isinstance(layer, Dense):
        with problems.check():
            fail("layers", f"layer {l} is a {type(layer).__name__}, not a Dense", "build layers with derive.Dense")
        return
    with problems.check() as units:
        if layer.units is not _MISSING and (not _is_int(layer.units) or not 1 <= layer.units <= MAX_UNITS):
            fail("units", f"units must be a whole number from 1 to {MAX_UNITS}, got {_show(layer.units)}",
                 "e.g. units = 8", l)
    _check_penalties(layer.penalty, problems, lambda key, what, fix: fail(key, what, fix, l))
    name = layer.activation
    with problems.check() as named:
        if not isinstance(name, str):
            fail("activation", f"activation must be a string, got {_show(name)}", 'e.g. activation = "relu"', l)
    if not named:
        return
    if layer.formula is not None:
        _check_custom_activation(net, l, layer, problems, fail)
        return
    with problems.check() as known:
        if name not in ACTIVATIONS:
            fail("activation", f"unknown activation {name!r}",
                 _suggest(name, ACTIVATIONS) + " (or give a formula in x for a custom activation)", l)
    if not known:
        return
    allowed = {sym.name for sym in ACTIVATIONS[name].params}
    for key, value in layer.params.items():
        with problems.check():
            if key not in allowed:
                fix = (f"{name} takes {', '.join(sorted(allowed))}" if allowed else f"{name} takes no parameters")
                fail(key, f"unknown key '{key}' for activation {name}", fix, l)
            if not _is_number(value) or not (0 < value <= 1e6):
                fail(key, f"{key} must be a number above 0 and at most 1e6, got {_show(value)}",
                     f"e.g. {key} = 0.1", l)
    with problems.check():
        if units and layer.units is not _MISSING and ACTIVATIONS[name].vector and layer.units < 2:
            fail("units", f"{name} needs at least 2 units", "use sigmoid for a single output", l)


def _check_custom_activation(net: Network, l: int, layer: Dense, problems: _Problems, fail) -> None:
    """A layer's custom activation: its name, no parameters, and a formula defined for every real x."""
    name = layer.activation
    with problems.check() as text:
        if not isinstance(layer.formula, str):
            fail("formula", f"formula must be a string, got {_show(layer.formula)}",
                 'e.g. formula = "x*tanh(log(1 + exp(x)))"', l)
    with problems.check():
        if name in ACTIVATIONS:
            fail("activation", f"'{name}' is a built-in activation and cannot take a formula",
                 "give the custom activation another name, or remove formula", l)
        problem = _identifier_problem(name)
        if problem or name.startswith("_"):
            fail("activation", f"custom activation name {_show(name)} {problem or 'starts with _'}",
                 'name it with a Python identifier, e.g. activation = "mish"', l)
    with problems.check():
        if layer.params:
            fail(next(iter(layer.params)), "a custom activation takes no parameters",
                 "write the numbers into the formula", l)
    if not text:
        return
    with problems.check():
        f = net.activation_formula(l)   # parses (safely) now, so errors surface at load time
        for x in PROBES:
            value = _value(f, x)
            if value is not None and not math.isfinite(value):
                fail("formula", f"{_show(layer.formula)} is not a finite real number at x = {x:g}",
                     "an activation must be defined for every input (no log or sqrt of negatives, "
                     "no exp of exp of exp)", l)
        from .formula import undefined_where
        problem = undefined_where(f)
        if problem:
            fail("formula", f"{_show(layer.formula)} {problem}",
                 "an activation must be a finite real number for every real x: keep denominators and the "
                 "arguments of log, roots and tan away from their poles (e.g. 1 + exp(...), x**2 + 1)", l)


def _loss_place(net: "Network", key: str) -> str:
    """`line N, loss.key` for a key of the [loss] table (or of an inline loss = {...}); `loss` for the
    plain `loss = "name"`."""
    path = "loss" if key == "" else f"loss.{key if isinstance(key, str) and len(key) <= MAX_NAME else _show(key)}"
    text = net._text
    if not text or not isinstance(key, str) or len(key) > MAX_NAME:
        return path
    header = re.search(r"^[ \t]*\[[ \t]*loss[ \t]*\][ \t]*(?:#.*)?$", text, re.M)
    inline = re.search(r"^[ \t]*loss[ \t]*=", text, re.M)
    if header:
        end = re.compile(r"^[ \t]*\[", re.M).search(text, header.end())
        body = text[header.end(): end.start() if end else len(text)]
        at = re.search(rf"^[ \t]*{re.escape(key)}[ \t]*=", body, re.M) if key else None
        start = header.end() + at.start() if at else header.start()
    elif inline:
        start = inline.start()
    else:
        return path
    return f"line {text.count(chr(10), 0, start) + 1}, {path}"


def _check_loss_name(net: Network, problems: _Problems) -> None:
    """The loss's name, its parameters and its targets (a custom loss's formula is parsed later)."""
    src = net.source

    def fail(key, what, fix):
        raise SpecError(src, _loss_place(net, key), what, fix)

    name, formula, target, params = net.loss, net.loss_formula, net.loss_target, net.loss_params
    with problems.check() as readable:
        if not isinstance(name, str):
            fail("" if formula is None and not params else "name", f"the loss must be a name, got {_show(name)}",
                 'e.g. loss = "mse", or a [loss] table with name = "..." and a formula in y_hat and y')
        if not isinstance(params, dict):
            fail("", f"loss parameters must be a table, got {_show(params)}",
                 "e.g. [loss] name = \"huber\", delta = 0.5")
    if not readable:
        return
    if formula is None:
        with problems.check() as known:
            if name not in LOSSES:
                fail("" if not params and target is None else "name", f"unknown loss {_show(name)}",
                     _suggest(name, LOSSES) + " (or give a formula in y_hat and y for a custom loss)")
        if not known:
            return
        entry = LOSSES[name]
        allowed = {sym.name for sym, _ in entry.params}
        with problems.check():
            if target is not None:
                fail("target", f"{name} takes {entry.target} targets and no target key",
                     "remove target, or write a custom loss (name and formula) to choose the targets")
        for key, value in params.items():
            with problems.check():
                if key not in allowed:
                    fix = (f"{name} takes {', '.join(sorted(allowed))}" if allowed else f"{name} takes no parameters")
                    fail(key, f"unknown key {_show(key)} for loss {name}", fix)
                if not _is_number(value) or not (0 < value <= 1e6):
                    fail(key, f"{key} must be a number above 0 and at most 1e6, got {_show(value)}", f"e.g. {key} = 0.5")
        return
    with problems.check():
        if not isinstance(formula, str):
            fail("formula", f"formula must be a string, got {_show(formula)}", 'e.g. formula = "-y*log(y_hat)"')
    with problems.check():
        if name in LOSSES:
            fail("name", f"'{name}' is a built-in loss and cannot take a formula",
                 "give the custom loss another name, or remove formula")
        problem = _identifier_problem(name)
        if problem or name.startswith("_"):
            fail("name", f"custom loss name {_show(name)} {problem or 'starts with _'}",
                 'name it with a Python identifier, e.g. name = "focal"')
    with problems.check():
        if target is not None and target not in TARGETS:
            fail("target", f"unknown target kind {_show(target)}", _suggest(target, TARGETS) +
                 " (values: y shaped like the output; onehot: rows of class probabilities; labels: integer classes)")
    with problems.check() as few:
        if len(params) > MAX_LOSS_PARAMS:
            fail(next(iter(params)), f"{len(params)} loss parameters is more than {MAX_LOSS_PARAMS}",
                 "write some numbers into the formula")
    if not few:
        return
    from .formula import CONSTANTS, FUNCTIONS
    taken = {"y", "y_hat", *CONSTANTS, *FUNCTIONS, *LOSS_KEYS}
    for key, value in params.items():
        with problems.check():
            problem = _identifier_problem(key)
            if problem or key.startswith("_") or key in taken:
                fail(key, f"loss parameter name {_show(key)} {problem or 'is taken (a variable, constant, function or key)'}",
                     "name a parameter with a Python identifier not used otherwise, e.g. gamma = 2.0")
            if not _is_number(value) or not math.isfinite(value) or abs(value) > MAX_LOSS_PARAM:
                fail(key, f"{key} must be a number from -{MAX_LOSS_PARAM:g} to {MAX_LOSS_PARAM:g}, got {_show(value)}",
                     f"e.g. {key} = 2.0")


def _check_penalties(penalty, problems: _Problems, fail) -> None:
    """Weight penalties: a table of PENALTY_KEYS -> numbers from 0 to MAX_PENALTY, a problem per key."""
    with problems.check() as table:
        if not isinstance(penalty, dict):
            fail("l2", f"penalties must be a dict of {', '.join(PENALTY_KEYS)}, got {_show(penalty)}", "e.g. l2 = 1e-4")
    if not table:
        return
    for key, value in penalty.items():
        with problems.check():
            if key not in PENALTY_KEYS:
                fail(key, f"unknown penalty {_show(key)}", _suggest(key, PENALTY_KEYS))
            if not _is_number(value) or not 0 <= value <= MAX_PENALTY:
                fail(key, f"{key} must be a number from 0 to {MAX_PENALTY:g}, got {_show(value)}",
                     f"e.g. {key} = 1e-4 (0 for none)")


# Target values a custom loss must be finite at, per kind of target.
_TARGET_PROBES = {"values": (0.0, 0.5, 1.0), "onehot": (0.0, 1.0), "labels": (0.0, 1.0)}
_PROBABILITIES = (0.05, 0.3, 0.6, 0.95)     # what a softmax output's units may be


def _check_custom_loss(net: Network) -> None:
    """Parse a custom loss's formula (safely) and check it is a finite real number wherever the output
    layer can put y_hat (its activation at the probe points) for targets the loss takes."""
    src, L = net.source, net.depth
    entry = net.loss_entry              # parses now, so errors surface at load time
    text = net.loss_formula
    for key in net.loss_params:
        if not re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", text):
            raise SpecError(src, _loss_place(net, key), f"parameter '{key}' is not used by the formula",
                            "remove it, or use it in the formula")
    last = net.layers[-1]
    if entry.target in ("onehot", "labels") and last.units < 2:
        raise SpecError(src, _place(net, "units", L), f"{entry.target} targets need at least 2 classes",
                        "use target = \"values\" for a single output")
    if net.is_vector(L):
        outputs = [(p, f"a {last.activation} output of {p:g}") for p in _PROBABILITIES]
    else:
        f = net.activation_formula(L)
        outputs = [(_value(f, z), f"what {last.activation} gives at z = {z:g}") for z in PROBES]
    from .naming import Y, YHAT
    for y_hat, why in outputs:
        if y_hat is None:
            continue
        for y in _TARGET_PROBES[entry.target]:
            value = _value(entry.element, {YHAT: y_hat, Y: y})
            if value is not None and not math.isfinite(value):
                raise SpecError(src, _loss_place(net, "formula"),
                                f"{_show(text)} is not a finite real number at y_hat = {y_hat:.4g} ({why}), y = {y:g}",
                                "the output layer's activation must keep y_hat where the loss is defined "
                                "(e.g. sigmoid or softmax for log(y_hat) and log(1 - y_hat), softplus for y_hat > 0)")


# Points a custom activation must be finite at: pre-activations of a trained network live here.
PROBES = (-3.0, -1.0, -0.25, 0.25, 1.0, 3.0)
_FLOAT_FUNCTIONS = {sp.exp: math.exp, sp.log: math.log, sp.sin: math.sin, sp.cos: math.cos, sp.tan: math.tan,
                    sp.sinh: math.sinh, sp.cosh: math.cosh, sp.tanh: math.tanh, sp.asinh: math.asinh,
                    sp.atan: math.atan, sp.erf: math.erf, sp.Abs: abs,
                    sp.sign: lambda u: float((u > 0) - (u < 0))}


def _value(expr: sp.Expr, x) -> float | None:
    """expr at X = x (or at {Symbol: value} for several) in Python floats (nan or inf where it is not a
    finite real), None if unsure.

    Evaluates the tree directly (no lambdify: that would exec generated text), so a tower like
    exp(exp(exp(x))) is caught here before the verifier's mpmath meets numbers with 10**9 digits.
    """
    env = x if isinstance(x, dict) else None

    def ev(e) -> float:
        if e.is_Symbol:
            return x if env is None else env[e]
        if e.is_Number or e.is_NumberSymbol:
            return float(e)
        args = [ev(a) for a in e.args]
        if e.is_Add:
            return math.fsum(args)
        if e.is_Mul:
            return math.prod(args)
        if e.is_Pow:
            return math.pow(*args)
        if isinstance(e, (sp.Max, sp.Min)):
            return (max if isinstance(e, sp.Max) else min)(args)
        return _FLOAT_FUNCTIONS[e.func](*args)

    try:
        return ev(expr)
    except (OverflowError, ValueError, ZeroDivisionError):
        return math.nan
    except (KeyError, TypeError, RecursionError):
        return None


@functools.lru_cache(maxsize=256)
def _installed_module(name: str) -> str:
    """Where Python would import `name` from ("" if nowhere, or only a module nnderive generated)."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return ""
    if spec is None or spec.origin in (None, "namespace"):    # a bare folder (namespace package): no code
        return ""
    origin = spec.origin
    if origin not in ("built-in", "frozen"):
        entry = os.path.dirname(os.path.abspath(origin))      # the sys.path entry it was found in
        if spec.submodule_search_locations is not None:
            entry = os.path.dirname(entry)
        if entry == os.getcwd():
            return ""   # a file of the working directory (on sys.path only for python -m): not installed
    if spec.origin and spec.origin.endswith(".py"):
        try:
            with open(spec.origin, "rb") as f:
                if f.read(40).startswith(b"# Code generated by nnderive"):
                    return ""           # an earlier generation of this very module
        except OSError:
            pass
    return one_line(origin, 80)


def _identifier_problem(name) -> str:
    """Why `name` cannot name a module or an activation in generated code ("" if it can)."""
    if not isinstance(name, str):
        return "is not a string"
    if not name.isascii() or not name.isidentifier():
        return "is not a Python identifier (ASCII letters, digits and _, not starting with a digit)"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return "is a Python keyword"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    return ""


def _warn_unusual(net: Network) -> None:
    """Pairings that work but are probably not what was meant: a one-line SpecWarning each."""
    last = net.layers[-1]

    def warn(key, what, fix, layer=None):
        warnings.warn(SpecWarning(str(SpecError(net.source, _place(net, key, layer), what, fix))), stacklevel=4)

    outputs = _outputs(last)
    needs = net.loss_entry.needs
    if outputs == "distribution" and needs == "" and not net.loss_entry.custom:
        warn("loss", f"{net.loss} on a {last.activation} output learns slowly where the {last.activation} saturates",
             'cce (or sparse_cce for integer labels) is the usual loss for class probabilities')
    if outputs == "distribution" and needs == "probability":
        warn("loss", f"{net.loss} on a {last.activation} output treats classes that sum to 1 as independent, and its "
             "loss is infinite where a logit saturates", 'use loss = "cce", or sigmoid outputs for independent labels')
    from .elementwise import diff
    from .naming import X
    for l, layer in enumerate(net.layers, start=1):
        if not net.is_vector(l) and diff(net.activation_formula(l), X) == 0:
            below = f"layers 1..{l}" if l > 1 else "layer 1"
            warn("activation", f"{layer.activation} has zero derivative, so {below} get zero gradients and "
                 "will not train", 'use sigmoid or tanh for a trainable threshold', l)


def _outputs(layer: Dense) -> str:
    """What a layer's outputs are, from its registry entry (a custom formula: any real number)."""
    return "" if layer.formula is not None else ACTIVATIONS[layer.activation].outputs


def _check_pairing(net: Network, fail) -> None:
    """Loss/output pairings that cannot work are errors."""
    if net.loss_formula is not None:
        return          # a custom loss is checked where the output can put y_hat (_check_custom_loss)
    last = net.layers[-1]
    n = len(net.layers)
    needs, outputs = LOSSES[net.loss].needs, _outputs(last)
    if needs == "distribution" and outputs != "distribution":
        other = 'loss = "bce"' if outputs == "probability" else 'loss = "mse"'
        fail("loss", f"{net.loss} needs a softmax output layer, the last layer is {last.activation}",
             f'set activation = "softmax" on the last layer, or use {other}')
    if needs == "probability" and outputs not in ("probability", "distribution"):
        fail("loss", f"{net.loss} needs outputs in (0, 1), but {last.activation} can leave that range",
             'use activation = "sigmoid" on the last layer')
    if net.loss == "sparse_cce" and last.units < 2:
        fail("units", "sparse_cce needs at least 2 classes", "use bce for a single output", n)


def network_from_dict(doc: dict, source: str = "<dict>", text: str = "") -> Network:
    """Build a Network from a parsed TOML document, checking types and unknown keys.

    Raises:
        SpecError: every independent problem (one line each), naming `source`, the line or key, and the fix.
    """
    probe = Network.__new__(Network)           # only for _place() line lookups
    object.__setattr__(probe, "_text", text)
    problems = _Problems()

    def fail(key, what, fix, layer=None):
        raise SpecError(source, _place(probe, key, layer), what, fix)

    if not isinstance(doc, dict):
        fail("", "a spec must be a table", 'start with name = "my_net", inputs, loss and [[layers]] tables')
    meant = set()               # keys a misspelt key is taken for: not reported missing as well
    for key in doc:
        if key not in TOP_KEYS:
            with problems.check():
                if isinstance(key, str) and key.startswith("loss_"):
                    fail(key, f"unknown key {_show(key)}", 'write a custom loss as a [loss] table: name = "focal", '
                         'formula = "..." in y_hat and y, and its parameters beside them (gamma = 2.0)')
                meant.update(_closest(key, TOP_KEYS))
                fail(key, f"unknown key {_show(key)}", _suggest(key, TOP_KEYS))
    missing = [key for key in REQUIRED_KEYS if key not in doc and key not in meant]
    if missing:                 # one problem, however many keys: an empty file is one line
        also = f" (and {', '.join(repr(k) for k in missing[1:])})" if len(missing) > 1 else ""
        with problems.check():
            fail(missing[0], f"missing key '{missing[0]}'{also}", "add " + ", ".join(
                {"name": 'name = "my_net"', "inputs": "inputs = 4", "loss": 'loss = "mse"',
                 "layers": "[[layers]] tables"}[key] for key in missing))
    layers = _MISSING
    if "layers" in doc:
        with problems.check() as tables:
            if not isinstance(doc["layers"], list) or not all(isinstance(t, dict) for t in doc["layers"]):
                fail("layers", "layers must be an array of tables", "write each layer as a [[layers]] table")
            if len(doc["layers"]) > MAX_LAYERS:
                fail("layers", f"{len(doc['layers'])} layers is more than {MAX_LAYERS}", "use fewer layers")
        if tables:
            layers = tuple(_layer_from_table(table, l, problems, fail) for l, table in enumerate(doc["layers"], 1))
    loss, loss_formula, loss_target, loss_params = doc.get("loss", _MISSING), None, None, {}
    if isinstance(loss, dict):
        for key, value in loss.items():
            with problems.check():
                if not isinstance(key, str) or not key.isprintable():
                    fail("loss", f"unknown key {_show(key)} in the loss table", "a [loss] table takes name, "
                         "formula, target and the loss's parameters")
                if key not in LOSS_KEYS:
                    loss_params[key] = value
        with problems.check():
            if "name" not in loss:
                raise SpecError(source, _loss_place(probe, ""), "the loss table has no name",
                                'add name = "huber" (a registry loss) or a name and a formula for a custom loss')
        loss, loss_formula, loss_target = loss.get("name", _MISSING), loss.get("formula"), loss.get("target")
    net = Network.__new__(Network)
    for attr, value in dict(name=doc.get("name", _MISSING), inputs=doc.get("inputs", _MISSING), layers=layers,
                            loss=loss, source=source, _text=text, _formulas={}, loss_formula=loss_formula,
                            loss_params=loss_params, loss_target=loss_target,
                            penalty={k: doc[k] for k in PENALTY_KEYS if k in doc}).items():
        object.__setattr__(net, attr, value)
    _validate(net, problems)
    problems.raise_any()
    return net


def _layer_from_table(table: dict, l: int, problems: _Problems, fail) -> Dense:
    """Layer l's Dense from its [[layers]] table; an unknown key is a problem (and left out)."""
    act = table.get("activation", "identity")
    takes = sorted(s.name for s in ACTIVATIONS[act].params) if isinstance(act, str) and act in ACTIVATIONS else []
    every_param = sorted({s.name for a in ACTIVATIONS.values() for s in a.params})
    params, meant = {}, set()
    for key, value in table.items():
        if key in LAYER_KEYS:
            continue
        if key in takes:
            params[key] = value
            continue
        close = _closest(key, list(LAYER_KEYS) + takes)
        meant.update(close)
        if close:
            fix = f"did you mean '{close[0]}'?"
        elif key in every_param:
            fix = f"{act} takes {', '.join(takes)}" if takes else f"{_show(act)} takes no parameters"
        else:
            fix = "a layer takes " + ", ".join(list(LAYER_KEYS) + takes)
        with problems.check():
            fail(key, f"unknown key {_show(key)} in a layer", fix, l)
    if "units" not in table and "units" not in meant:
        with problems.check():
            fail("units", "missing key 'units'", "add units = N", l)
    penalties = {k: table[k] for k in PENALTY_KEYS if k in table}
    return Dense(table.get("units", _MISSING), act, table.get("formula"), **params, **penalties)


def load_spec(path) -> Network:
    """Read and validate a TOML spec file.

    Only a regular file of at most MAX_SPEC_BYTES is read (not a directory, FIFO or device).

    Raises:
        SpecError: the file is missing, unreadable, not TOML, or not a valid spec.
    """
    source = one_line(str(path))
    try:
        path = Path(path)
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise SpecError(source, "", "is a directory, not a spec file", "name a .toml file")
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(source, "", "is not a regular file", "name a .toml file")
        if info.st_size > MAX_SPEC_BYTES:
            raise SpecError(source, "", f"spec file larger than {MAX_SPEC_BYTES:,} bytes", "a spec is a few lines of TOML")
        # O_NONBLOCK: a file swapped for a FIFO since the stat must not make open wait for a writer.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise SpecError(source, "", "is not a regular file", "name a .toml file")
            raw = f.read(MAX_SPEC_BYTES + 1)
    except SpecError:                    # a ValueError too: not to be rewrapped below
        raise
    except FileNotFoundError:
        raise SpecError(source, "", "no such file", "check the path") from None
    except (OSError, ValueError) as e:   # ValueError: a NUL byte in the path
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise SpecError(source, "", f"cannot read: {reason}", "check the path and the file's permissions") from None
    return parse_spec(raw, source)


def parse_spec(raw: bytes | str, source: str = "<text>") -> Network:
    """Validate a spec given as TOML bytes or text (what load_spec does once the file is read).

    >>> text = 'name = "logreg"', 'inputs = 3', 'loss = "bce"', '[[layers]]', 'units = 1', 'activation = "sigmoid"'
    >>> parse_spec("\\n".join(text)).sizes
    [3, 1]
    """
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(source, "", f"spec file larger than {MAX_SPEC_BYTES:,} bytes", "a spec is a few lines of TOML")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(source, f"byte {e.start}", "not UTF-8 text", "save the spec as UTF-8") from None
    problem = toml_shape_problem(text)
    if problem:
        line, what = problem
        raise SpecError(source, f"line {line}", what, "a spec needs only plain keys and [[layers]] tables")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e).splitlines()[0]
        raise SpecError(source, "", f"not valid TOML ({msg})", "fix the TOML syntax") from None
    except RecursionError:
        raise SpecError(source, "", "not valid TOML (nested too deeply)", "a spec needs no nested arrays") from None
    return network_from_dict(doc, source, text)


MAX_KEY_PARTS = 16     # parts of one dotted key or [table.header]: tomllib is quadratic in them
MAX_NESTING = 16       # arrays and inline tables inside one another
_TOML_TOKEN = re.compile(r'"""|\'\'\'|"|\'|#|\n|[\[\]{}.=,]')
# Where each kind of string ends (a multi-line one may end in up to two extra quotes).
_STRING_END = {'"""': re.compile(r'(?:[^"\\]|\\.|"(?!""))*"{3,5}', re.S),
               "'''": re.compile(r"(?:[^']|'(?!''))*'{3,5}"),
               '"': re.compile(r'(?:[^"\\\n]|\\.)*"'), "'": re.compile(r"[^'\n]*'")}


def toml_shape_problem(text: str) -> tuple[int, str] | None:
    """(line, what) when the TOML text has a dotted key or table header of more than MAX_KEY_PARTS
    parts, or nests arrays and inline tables deeper than MAX_NESTING; else None.

    A linear scan run before tomllib, which takes gigabytes and minutes on a 40 KB key of 20,000
    parts: strings and comments are skipped, and a dot counts only where a key is being read.
    Malformed text is left for tomllib to report.
    """
    line, stack, parts, in_key = 1, [], 1, True
    pos = 0
    while True:
        m = _TOML_TOKEN.search(text, pos)
        if m is None:
            return None
        token, pos = m.group(), m.end()
        if token == "\n":
            line += 1
            if not stack or stack[-1] == "header":
                stack, parts, in_key = [], 1, True
        elif token == "#":
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
        elif token in _STRING_END:
            end = _STRING_END[token].match(text, pos)
            if end is None:
                return None                 # unterminated: tomllib says where
            line += text.count("\n", pos, end.end())
            pos = end.end()
        elif token == ".":
            if in_key:
                parts += 1
                if parts > MAX_KEY_PARTS:
                    return line, f"a dotted key or table name of more than {MAX_KEY_PARTS} parts"
        elif token == "=":
            in_key, parts = False, 1
        elif token == ",":
            if stack and stack[-1] == "{":
                in_key, parts = True, 1
        elif token in "[{":
            if token == "[" and in_key and not stack:
                stack.append("header")        # [table] or [[array.of.tables]]: a key follows
                continue
            if stack and stack[-1] == "header":
                continue                      # the second [ of [[...]]
            stack.append(token)
            if len(stack) > MAX_NESTING:
                return line, f"arrays or inline tables nested more than {MAX_NESTING} deep"
            in_key, parts = token == "{", 1
        elif token in "]}":
            if stack and stack[-1] != "header":
                stack.pop()
            in_key = False


def content_hash(net: Network) -> str:
    """A short hash of what the network is (not of its formatting): a loss's settings and the penalties
    enter it only where given, so the hash of a network without them is what it always was."""
    import hashlib
    desc = repr((net.name, net.inputs, [(l.units, l.activation, sorted(l.params.items()), l.formula)
                                        + ((sorted(l.penalty.items()),) if l.penalty else ())
                                        for l in net.layers], net.loss))
    extra = (net.loss_formula, sorted(net.loss_params.items()), net.loss_target, sorted(net.penalty.items()))
    if extra != (None, [], None, []):
        desc += repr(extra)
    return hashlib.sha256(desc.encode()).hexdigest()[:12]
