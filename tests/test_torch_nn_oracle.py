"""The engine against torch autograd, float64: forward output and every gradient to 1e-10."""

import numpy as np
import pytest

from initlab.nn import Dense, Sequential

torch = pytest.importorskip("torch")

TORCH_ACT = {
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "elu": torch.nn.functional.elu, "selu": torch.selu, "softplus": torch.nn.functional.softplus,
    "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu,
    "leaky_relu": torch.nn.functional.leaky_relu, "linear": lambda z: z,
}


def _torch_loss(name, out, y):
    if name == "binary_crossentropy":
        return torch.nn.functional.binary_cross_entropy_with_logits(out, y)
    if name == "softmax_crossentropy":
        return torch.nn.functional.cross_entropy(out, y)
    return torch.nn.functional.mse_loss(out, y)


@pytest.mark.parametrize("act", sorted(TORCH_ACT))
@pytest.mark.parametrize("loss,units", [("binary_crossentropy", 1),
                                        ("softmax_crossentropy", 4), ("mean_squared_error", 2)])
def test_three_layer_network_matches_torch_autograd(act, loss, units):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 5))
    out_act = {"binary_crossentropy": "sigmoid", "softmax_crossentropy": "softmax"}.get(loss,
                                                                                        "linear")
    model = Sequential([Dense(7, act, init="he_normal", bias_init={"name": "normal", "std": .1}),
                        Dense(6, act, init="he_normal", bias_init={"name": "normal", "std": .1}),
                        Dense(units, out_act, init="glorot_normal")])
    model.compile(loss).build(5, rng=1)
    if loss == "binary_crossentropy":
        y = rng.integers(0, 2, 16).astype(float)
        y_torch = torch.tensor(y[:, None])
    elif loss == "softmax_crossentropy":
        y = rng.integers(0, units, 16)
        y_torch = torch.tensor(y)
    else:
        y = rng.standard_normal((16, units))
        y_torch = torch.tensor(y)
    cost = model.compute_gradients(X, y)

    params = [torch.tensor(p[0], requires_grad=True) for p in model.parameters()]
    a = torch.tensor(X)
    for i in range(3):
        z = a @ params[2 * i] + params[2 * i + 1]
        a = TORCH_ACT[act](z) if i < 2 else z
    torch_cost = _torch_loss(loss, a, y_torch)
    torch_cost.backward()

    logits = model.traces[-1].z[0]
    np.testing.assert_allclose(logits, a.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert cost[0] == pytest.approx(torch_cost.item(), rel=1e-10)
    for mine, theirs in zip(model.gradients(), params, strict=True):
        np.testing.assert_allclose(mine[0], theirs.grad.numpy(), rtol=1e-10, atol=1e-13)
    if out_act != "linear":
        probs = {"sigmoid": torch.sigmoid, "softmax": lambda t: torch.softmax(t, -1)}[out_act]
        np.testing.assert_allclose(model.predict(X), probs(a).detach().numpy(), rtol=1e-10)
