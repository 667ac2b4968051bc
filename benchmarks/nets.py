"""The benchmarked networks, their parameters and data, shared by every runtime.

Imports NumPy only when making arrays, so the benchmark driver never loads a BLAS.
"""
from dataclasses import dataclass

# The runtimes `_worker.py` can time, in report order.
RUNTIMES = ("generated", "generated_sgd_step", "numpy", "numpy_opt", "torch", "jax", "gemm")
# ... and its curvature runtimes (`curvature.py`): the generated module's products, its
# loss_and_grad (the yardstick), and the forward-over-reverse Hessian-vector product of each peer.
CURVATURE_RUNTIMES = ("generated_hvp", "generated_gnvp", "generated_loss_grad_hvp",
                      "generated_loss_and_grad", "jax_hvp", "torch_hvp")
# ... and its array-API runtimes (`array_api.py`, `array_api_gpu.py`): the `--array-api` module
# (<name>_xp.py) on torch tensors, JAX arrays (its sgd_update under jax.jit) and CuPy arrays,
# next to PyTorch eager (peers.make_torch_step, the "torch" runtime; and nn.Linear layers with
# torch.optim.SGD) and JAX jit of value_and_grad (the "jax" runtime). Worker option --device
# (cpu, cuda) places the torch and CuPy arrays.
XP_RUNTIMES = ("xp_torch_sgd_step", "xp_torch_loss_and_grad", "torch", "torch_nn",
               "xp_jax_sgd_update", "jax", "xp_cupy_sgd_step", "xp_cupy_loss_and_grad")


@dataclass(frozen=True)
class Net:
    """A fully connected network: relu hidden layers and one output head.

    head is "softmax_cce" (softmax output, categorical cross-entropy, y one-hot)
    or "sigmoid_mse" (sigmoid output, 1/2 sum (y_hat - y)**2, y in [0, 1]).
    """

    name: str
    sizes: tuple  # (n_in, n_1, ..., n_L)
    head: str

    @property
    def layers(self):
        return len(self.sizes) - 1

    def param_shapes(self):
        """{"W1": (n_1, n_0), "b1": (n_1,), ...}, the generated-module layout."""
        shapes = {}
        for l in range(1, self.layers + 1):
            shapes[f"W{l}"] = (self.sizes[l], self.sizes[l - 1])
            shapes[f"b{l}"] = (self.sizes[l],)
        return shapes

    def nominal_flops(self, batch):
        """6 * batch * sum(n_in * n_out): forward, dW and dX matmuls of every layer.

        The conventional count. A step needs no gradient for x, so the matmuls a
        step really does are `step_flops`; `nominal_flops` is what GFLOP/s use.
        """
        return 6 * batch * sum(a * b for a, b in zip(self.sizes, self.sizes[1:]))

    def step_flops(self, batch):
        """Multiply-add FLOPs of the 3L - 1 matmuls a training step needs."""
        return self.nominal_flops(batch) - 2 * batch * self.sizes[0] * self.sizes[1]

    def spec_toml(self):
        """The nnderive spec (TOML) of this network."""
        out_act, loss = {"softmax_cce": ("softmax", "cce"), "sigmoid_mse": ("sigmoid", "mse")}[self.head]
        lines = [f'name = "{self.name}"', f"inputs = {self.sizes[0]}", f'loss = "{loss}"']
        for l in range(1, self.layers + 1):
            act = out_act if l == self.layers else "relu"
            lines += ["", "[[layers]]", f"units = {self.sizes[l]}", f'activation = "{act}"']
        return "\n".join(lines) + "\n"


NETS = {
    net.name: net
    for net in (
        Net("mlp_784_256_128_10", (784, 256, 128, 10), "softmax_cce"),
        Net("mlp_4_2_3", (4, 2, 3), "sigmoid_mse"),
    )
}


# Networks only the array-API benchmarks time (bench.py's full run keeps to NETS): the GPU
# script's wider one.
EXTRA_NETS = {net.name: net for net in (Net("mlp_784_512_512_10", (784, 512, 512, 10), "softmax_cce"),)}
ALL_NETS = {**NETS, **EXTRA_NETS}


def make_params(net, dtype="float64", seed=0):
    """He-normal weights, small random biases (so bias gradients are exercised)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    params = {}
    for l in range(1, net.layers + 1):
        n_out, n_in = net.sizes[l], net.sizes[l - 1]
        params[f"W{l}"] = (rng.standard_normal((n_out, n_in)) * np.sqrt(2.0 / n_in)).astype(dtype)
        params[f"b{l}"] = (0.1 * rng.standard_normal(n_out)).astype(dtype)
    return params


def make_batch(net, batch, dtype="float64", seed=1):
    """x ~ N(0, 1); y one-hot (softmax_cce) or uniform in [0, 1] (sigmoid_mse)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, net.sizes[0])).astype(dtype)
    n_out = net.sizes[-1]
    if net.head == "softmax_cce":
        y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, batch)]
    else:
        y = rng.uniform(0.0, 1.0, (batch, n_out)).astype(dtype)
    return x, y


def make_direction(net, dtype="float64", seed=2):
    """A direction v for Hessian-vector products: N(0, 1) entries, a dict shaped like the parameters."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape).astype(dtype) for k, shape in net.param_shapes().items()}
