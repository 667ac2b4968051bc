"""Network specs from TOML or Python, validated in one place: every spec error is raised here."""
import difflib
import keyword
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import sympy as sp

from .activations import ACTIVATIONS
from .errors import SpecError
from .losses import LOSSES

# Names a spec may not take: they would shadow the generated module's own API.
RESERVED = {"PARAM_SHAPES", "init_params", "forward", "backward", "loss", "loss_and_grad", "predict",
            "np", "numpy", "math", "sgd_step"}
MAX_UNITS = 1_000_000
MAX_LAYERS = 256
TOP_KEYS = ("name", "inputs", "loss", "layers")
LAYER_KEYS = ("units", "activation", "formula")


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

    def __init__(self, units: int, activation: str = "identity", formula: str | None = None, **params):
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "activation", activation)
        object.__setattr__(self, "params", dict(params))
        object.__setattr__(self, "formula", formula)


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
            from .formula import parse_formula
            return parse_formula(layer.formula, self.source, f"layers[{l}].formula")
        return ACTIVATIONS[layer.activation].bind(**layer.params)

    def is_vector(self, l: int) -> bool:
        layer = self.layers[l - 1]
        return layer.formula is None and ACTIVATIONS[layer.activation].vector

    def describe(self) -> str:
        """One line: 4 -> 2 (relu) -> 3 (sigmoid), loss mse."""
        parts = [str(self.inputs)] + [f"{layer.units} ({layer.activation})" for layer in self.layers]
        return " -> ".join(parts) + f", loss {self.loss}"

    def with_widths(self, cap: int) -> "Network":
        """A copy with every hidden width cut to at most `cap` (the output width too if larger)."""
        layers = [Dense(min(layer.units, cap), layer.activation, layer.formula, **layer.params)
                  for layer in self.layers]
        return Network(self.name, min(self.inputs, cap), layers, self.loss, self.source)


def _suggest(word: str, options) -> str:
    match = difflib.get_close_matches(str(word), list(options), n=1)
    return f"did you mean '{match[0]}'?" if match else "use one of: " + ", ".join(sorted(options))


def _place(net: "Network", key: str, layer: int | None = None) -> str:
    """`line N, key` when the TOML text is known, else the key path."""
    path = key if layer is None else f"layers[{layer}].{key}"
    if not net._text:
        return path
    table = 0
    for n, line in enumerate(net._text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("[[layers]]"):
            table += 1
        elif re.match(rf"{re.escape(key)}\s*=", stripped) and table == (layer or 0):
            return f"line {n}, {path}"
    return path


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate(net: Network) -> None:
    """Raise SpecError for the first problem in `net`, naming the place and the fix."""
    src = net.source

    def fail(key, what, fix, layer=None):
        raise SpecError(src, _place(net, key, layer), what, fix)

    if not isinstance(net.name, str) or not net.name.isidentifier() or not net.name.isascii():
        fail("name", f"{net.name!r} is not a Python identifier", "use letters, digits and _, not starting with a digit")
    if keyword.iskeyword(net.name) or net.name in RESERVED or net.name.startswith("__"):
        fail("name", f"{net.name!r} is reserved", "choose another module name")
    if not _is_int(net.inputs) or not 1 <= net.inputs <= MAX_UNITS:
        fail("inputs", f"inputs must be a whole number from 1 to {MAX_UNITS}, got {net.inputs!r}", "e.g. inputs = 4")
    if not isinstance(net.loss, str) or net.loss not in LOSSES:
        fail("loss", f"unknown loss {net.loss!r}", _suggest(net.loss, LOSSES))
    if not net.layers:
        fail("layers", "the network has no layers", "add at least one [[layers]] table with units and activation")
    if len(net.layers) > MAX_LAYERS:
        fail("layers", f"{len(net.layers)} layers is more than {MAX_LAYERS}", "use fewer layers")
    for l, layer in enumerate(net.layers, start=1):
        if not isinstance(layer, Dense):
            fail("layers", f"layer {l} is a {type(layer).__name__}, not a Dense", "build layers with derive.Dense")
        if not _is_int(layer.units) or not 1 <= layer.units <= MAX_UNITS:
            fail("units", f"units must be a whole number from 1 to {MAX_UNITS}, got {layer.units!r}",
                 "e.g. units = 8", l)
        name = layer.activation
        if not isinstance(name, str):
            fail("activation", f"activation must be a string, got {name!r}", 'e.g. activation = "relu"', l)
        if layer.formula is not None:
            if not isinstance(layer.formula, str):
                fail("formula", "formula must be a string", 'e.g. formula = "x*tanh(log(1 + exp(x)))"', l)
            if name in ACTIVATIONS:
                fail("activation", f"'{name}' is a built-in activation and cannot take a formula",
                     "give the custom activation another name, or remove formula", l)
            if not name.isidentifier() or not name.isascii() or keyword.iskeyword(name):
                fail("activation", f"custom activation name {name!r} is not a Python identifier",
                     "use letters, digits and _", l)
            if layer.params:
                fail(next(iter(layer.params)), "a custom activation takes no parameters",
                     "write the numbers into the formula", l)
            net.activation_formula(l)   # parses (safely) now, so errors surface at load time
            continue
        if name not in ACTIVATIONS:
            fail("activation", f"unknown activation {name!r}",
                 _suggest(name, ACTIVATIONS) + " (or give a formula in x for a custom activation)", l)
        allowed = {sym.name for sym in ACTIVATIONS[name].params}
        for key, value in layer.params.items():
            if key not in allowed:
                fix = (f"{name} takes {', '.join(sorted(allowed))}" if allowed else f"{name} takes no parameters")
                fail(key, f"unknown key '{key}' for activation {name}", fix, l)
            if not _is_number(value) or not (0 < value <= 1e6) or value != value:
                fail(key, f"{key} must be a positive number, got {value!r}", f"e.g. {key} = 0.1", l)
        if ACTIVATIONS[name].vector and layer.units < 2:
            fail("units", f"{name} needs at least 2 units", "use sigmoid for a single output", l)
    _check_pairing(net, fail)


def _check_pairing(net: Network, fail) -> None:
    """Loss/output pairings that cannot work are errors."""
    last = net.layers[-1]
    n = len(net.layers)
    if LOSSES[net.loss].target in ("onehot", "labels") and last.activation != "softmax":
        fail("loss", f"{net.loss} needs a softmax output layer, the last layer is {last.activation}",
             'set activation = "softmax" on the last layer, or use loss = "bce" or "mse"')
    if net.loss == "bce" and last.activation not in ("sigmoid", "softmax"):
        fail("loss", f"bce needs outputs in (0, 1), but {last.activation} can leave that range",
             'use activation = "sigmoid" on the last layer')
    if net.loss == "sparse_cce" and last.units < 2:
        fail("units", "sparse_cce needs at least 2 classes", "use bce for a single output", n)


def network_from_dict(doc: dict, source: str = "<dict>", text: str = "") -> Network:
    """Build a Network from a parsed TOML document, checking types and unknown keys."""
    probe = Network.__new__(Network)           # only for _place() line lookups
    object.__setattr__(probe, "_text", text)

    def fail(key, what, fix, layer=None):
        raise SpecError(source, _place(probe, key, layer), what, fix)

    if not isinstance(doc, dict):
        fail("", "a spec must be a table", "see the spec format in README.md")
    for key in doc:
        if key not in TOP_KEYS:
            fail(key, f"unknown key '{key}'", _suggest(key, TOP_KEYS))
    for key in ("name", "inputs", "loss", "layers"):
        if key not in doc:
            fail(key, f"missing key '{key}'", {"name": 'add name = "my_net"', "inputs": "add inputs = 4",
                                               "loss": 'add loss = "mse"',
                                               "layers": "add [[layers]] tables"}[key])
    if not isinstance(doc["layers"], list) or not all(isinstance(t, dict) for t in doc["layers"]):
        fail("layers", "layers must be an array of tables", "write each layer as a [[layers]] table")
    layers = []
    for l, table in enumerate(doc["layers"], start=1):
        if "units" not in table:
            fail("units", "missing key 'units'", "add units = N", l)
        params = {}
        for key, value in table.items():
            if key in LAYER_KEYS:
                continue
            act = table.get("activation")
            if isinstance(act, str) and act in ACTIVATIONS and key in {s.name for s in ACTIVATIONS[act].params}:
                params[key] = value
            else:
                known = list(LAYER_KEYS) + [s.name for a in ACTIVATIONS.values() for s in a.params]
                fail(key, f"unknown key '{key}'", _suggest(key, known) if isinstance(act, str) and act in ACTIVATIONS
                     and ACTIVATIONS[act].params else f"{act} takes no parameters; remove '{key}'", l)
        layers.append(Dense(table["units"], table.get("activation", "identity"), table.get("formula"), **params))
    net = Network.__new__(Network)
    for attr, value in dict(name=doc["name"], inputs=doc["inputs"], layers=tuple(layers), loss=doc["loss"],
                            source=source, _text=text).items():
        object.__setattr__(net, attr, value)
    validate(net)
    return net


def load_spec(path) -> Network:
    """Read and validate a TOML spec file.

    Raises:
        SpecError: the file is missing, unreadable, not TOML, or not a valid spec.
    """
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(source, "", "no such file", "check the path") from None
    except IsADirectoryError:
        raise SpecError(source, "", "is a directory, not a spec file", "name a .toml file") from None
    except OSError as e:
        raise SpecError(source, "", f"cannot read: {e.strerror}", "check the file's permissions") from None
    if len(raw) > 1_000_000:
        raise SpecError(source, "", "spec file larger than 1 MB", "a spec is a few lines of TOML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(source, f"byte {e.start}", "not UTF-8 text", "save the spec as UTF-8") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e).splitlines()[0]
        raise SpecError(source, "", f"not valid TOML ({msg})", "fix the TOML syntax") from None
    return network_from_dict(doc, source, text)


def content_hash(net: Network) -> str:
    """A short hash of what the network is (not of its formatting)."""
    import hashlib
    desc = repr((net.name, net.inputs, [(l.units, l.activation, sorted(l.params.items()), l.formula)
                                        for l in net.layers], net.loss))
    return hashlib.sha256(desc.encode()).hexdigest()[:12]
