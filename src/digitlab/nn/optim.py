"""Optimisers, kept outside the layers (CS231n style): they read ``(name, param, grad)`` triples from
the model each step and update the parameters in place. Formulas follow ``torch.optim`` exactly so
that the tests can compare step by step.
"""

from __future__ import annotations

import numpy as np


class Optimizer:
    """Base: holds the model, the learning rate and per-parameter state keyed by parameter name."""

    def __init__(self, model, lr: float) -> None:
        if not lr > 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        self.model, self.lr, self.base_lr = model, lr, lr
        self.state: dict[str, np.ndarray] = {}
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        for name, p, g in self.model.parameters_and_grads():
            self.update(name, p, g)

    def update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, np.ndarray]:
        out = {f"state/{k}": v for k, v in self.state.items()}
        out["steps"] = np.array(self.steps)
        out["lr"] = np.array(self.lr)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])
        self.state = {k[len("state/"):]: np.array(v) for k, v in state.items() if k.startswith("state/")}


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay.

    ``g <- g + wd * p``; ``v <- mu * v + g`` (``v = g`` on the first step); plain momentum steps along
    ``v``, Nesterov along ``g + mu * v`` (a look-ahead); ``p <- p - lr * step``. With a constant gradient
    the velocity converges to ``g / (1 - mu)``: momentum 0.9 makes the effective step 10x the lr.
    """

    def __init__(self, model, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(model, lr)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        if self.weight_decay:
            g = g + p.dtype.type(self.weight_decay) * p
        if self.momentum:
            v = self.state.get(name)
            if v is None:
                v = self.state[name] = g.copy()
            else:
                v *= p.dtype.type(self.momentum)
                v += g
            g = g + p.dtype.type(self.momentum) * v if self.nesterov else v
        p -= p.dtype.type(self.lr) * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): per-parameter steps scaled by running RMS of the gradient.

    ``m <- b1 m + (1-b1) g``, ``v <- b2 v + (1-b2) g^2``, bias-corrected by ``1 - b^t`` (the averages
    start at 0), ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)``. ``weight_decay`` adds ``wd * p`` to the
    gradient (``torch.optim.Adam``); ``decoupled=True`` shrinks the weights directly (AdamW).
    """

    def __init__(self, model, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False) -> None:
        super().__init__(model, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay, self.decoupled = eps, weight_decay, decoupled

    def update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        t = p.dtype.type
        if self.weight_decay and self.decoupled:
            p *= t(1 - self.lr * self.weight_decay)
        elif self.weight_decay:
            g = g + t(self.weight_decay) * p
        m = self.state.setdefault(f"{name}.m", np.zeros_like(p))
        v = self.state.setdefault(f"{name}.v", np.zeros_like(p))
        m *= t(self.beta1)
        m += t(1 - self.beta1) * g
        v *= t(self.beta2)
        v += t(1 - self.beta2) * g * g
        bias1 = 1 - self.beta1 ** self.steps
        bias2 = 1 - self.beta2 ** self.steps
        denom = np.sqrt(v) / t(np.sqrt(bias2)) + t(self.eps)
        p -= t(self.lr / bias1) * (m / denom)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}
