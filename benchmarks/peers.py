"""The same training step in PyTorch (eager) and JAX (jit), written the way each is best used;
and the Hessian-vector product of the same loss, forward-over-reverse in each."""
import numpy as np


def _keys(params):
    return [f"{p}{l}" for l in range(1, len(params) // 2 + 1) for p in ("W", "b")]


def torch_loss(params, x, y, head):
    """Batch-mean loss of the network; params: dict of torch tensors."""
    import torch
    import torch.nn.functional as F

    L = len(params) // 2
    a = x
    for l in range(1, L):
        a = torch.relu(F.linear(a, params[f"W{l}"], params[f"b{l}"]))
    return torch_head_loss(F.linear(a, params[f"W{L}"], params[f"b{L}"]), y, head)


def torch_head_loss(z, y, head):
    """The batch-mean loss of the output pre-activations z (torch tensors)."""
    import torch
    import torch.nn.functional as F

    if head == "softmax_cce":
        return F.cross_entropy(z, y)  # y: class probabilities; mean over the batch
    return 0.5 * F.mse_loss(torch.sigmoid(z), y, reduction="sum") / z.shape[0]


def torch_loss_and_grad(params, x, y, head):
    """(loss, grads) by torch autograd, NumPy in and out: the independent reference."""
    import torch

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    loss = torch_loss(tp, torch.from_numpy(x), torch.from_numpy(y), head)
    loss.backward()
    return loss.item(), {k: t.grad.numpy() for k, t in tp.items()}


def make_torch_step(params, x, y, lr, head, device="cpu"):
    """Return (step, get_params): step() does one SGD step and returns the loss (a float: on a GPU
    that waits for the step)."""
    import torch

    tp = {k: torch.tensor(v, requires_grad=True, device=device) for k, v in params.items()}
    ps = list(tp.values())
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def step():
        loss = torch_loss(tp, tx, ty, head)
        loss.backward()
        with torch.no_grad():
            for p in ps:
                p.sub_(p.grad, alpha=lr)
                p.grad = None
        return loss.item()

    def get_params():
        return {k: t.detach().cpu().numpy().copy() for k, t in tp.items()}

    return step, get_params


def make_torch_nn_step(params, x, y, lr, head, device="cpu"):
    """Return (step, get_params): the textbook PyTorch step, nn.Linear layers in an nn.Sequential,
    the same loss, torch.optim.SGD (its defaults: for-loop on CPU, foreach on CUDA)."""
    import torch
    from torch import nn

    L = len(params) // 2
    mods = []
    with torch.no_grad():
        for l in range(1, L + 1):
            n_out, n_in = params[f"W{l}"].shape
            lin = nn.Linear(n_in, n_out, dtype=torch.from_numpy(params[f"W{l}"]).dtype, device=device)
            lin.weight.copy_(torch.from_numpy(params[f"W{l}"]))
            lin.bias.copy_(torch.from_numpy(params[f"b{l}"]))
            mods += [lin, nn.ReLU()] if l < L else [lin]
    model = nn.Sequential(*mods)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    tx, ty = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    linears = [m for m in model if isinstance(m, nn.Linear)]

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch_head_loss(model(tx), ty, head)
        loss.backward()
        opt.step()
        return loss.item()

    def get_params():
        out = {}
        for l, lin in enumerate(linears, 1):
            out[f"W{l}"] = lin.weight.detach().cpu().numpy().copy()
            out[f"b{l}"] = lin.bias.detach().cpu().numpy().copy()
        return out

    return step, get_params


def _import_jax(dtype):
    """jax and jax.numpy, with 64-bit arrays enabled for float64 (JAX makes float32 otherwise)."""
    import jax

    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jax, jnp


def jax_loss(p, x, y, head):
    """Batch-mean loss of the network, the same as torch_loss; p: dict of JAX arrays."""
    import jax
    import jax.numpy as jnp

    L = len(p) // 2
    a = x
    for l in range(1, L):
        a = jax.nn.relu(a @ p[f"W{l}"].T + p[f"b{l}"])
    z = a @ p[f"W{L}"].T + p[f"b{L}"]
    if head == "softmax_cce":
        return -jnp.sum(y * jax.nn.log_softmax(z, axis=1)) / x.shape[0]
    return 0.5 * jnp.sum((jax.nn.sigmoid(z) - y) ** 2) / x.shape[0]


def make_jax_step(params, x, y, lr, head):
    """Return (step, get_params); the whole step is one jitted function, params donated."""
    jax, jnp = _import_jax(params["W1"].dtype)

    def _step(p, x, y):
        loss, g = jax.value_and_grad(lambda q: jax_loss(q, x, y, head))(p)
        return jax.tree.map(lambda w, gw: w - lr * gw, p, g), loss

    # Donation lets XLA update the parameters in place where the backend can.
    step_fn = jax.jit(_step, donate_argnums=0)
    state = {"p": {k: jnp.asarray(v) for k, v in params.items()}}
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    assert state["p"]["W1"].dtype == params["W1"].dtype, "jax changed the dtype"

    def step():
        state["p"], loss = step_fn(state["p"], jx, jy)
        return float(loss)  # waits for the result

    def get_params():
        return {k: np.array(v) for k, v in state["p"].items()}

    return step, get_params


# --- Hessian-vector products: H v of the batch-mean loss, forward-over-reverse (the jvp of the gradient) ---


def make_torch_hvp(params, x, y, v, head):
    """Return hvp(): torch.func.jvp of torch.func.grad of torch_loss at params along v, eager
    (what torch.func.hvp does, without its extra primal output); returns a dict of tensors."""
    import torch
    from torch.func import grad, jvp

    tp = {k: torch.from_numpy(a) for k, a in params.items()}
    tv = {k: torch.from_numpy(a) for k, a in v.items()}
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    grad_fn = grad(lambda p: torch_loss(p, tx, ty, head))

    def hvp():
        return jvp(grad_fn, (tp,), (tv,))[1]

    return hvp


def make_jax_hvp(params, x, y, v, head):
    """Return hvp(): one jitted jax.jvp(jax.grad(loss), (params,), (v,))[1], waited for (XLA
    drops the gradient, which the jvp computes alongside, as dead code); a dict of JAX arrays."""
    jax, jnp = _import_jax(params["W1"].dtype)

    def _hvp(p, v, x, y):
        return jax.jvp(jax.grad(lambda q: jax_loss(q, x, y, head)), (p,), (v,))[1]

    hvp_fn = jax.jit(_hvp)
    jp = {k: jnp.asarray(a) for k, a in params.items()}
    jv = {k: jnp.asarray(a) for k, a in v.items()}
    jx, jy = jnp.asarray(x), jnp.asarray(y)
    assert jp["W1"].dtype == params["W1"].dtype, "jax changed the dtype"

    def hvp():
        return jax.block_until_ready(hvp_fn(jp, jv, jx, jy))

    return hvp
