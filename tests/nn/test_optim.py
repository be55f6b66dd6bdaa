"""Optimisers against torch.optim step by step, schedules against torch.optim.lr_scheduler."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digitlab.models import build, mlp_spec
from digitlab.nn import SGD, Adam, Constant, Cosine, OneCycle, SoftmaxCrossEntropy, StepDecay, make_schedule
from digitlab.torch import build_module, numpy_to_torch

torch.set_num_threads(1)

STEPS = 20
RTOL, ATOL = 1e-5, 1e-6


def twin_models(seed: int = 0):
    spec = mlp_spec(hidden=(7,), dropout=0, input_shape=(1, 3, 4), num_classes=5)
    model = build(spec, seed=seed)
    for layer in model.layers:  # non-zero biases, so their updates are checked from step 1
        if "b" in layer.params:
            layer.params["b"][...] = np.random.default_rng(seed + 1).normal(0, 0.1, layer.params["b"].shape)
    module = numpy_to_torch(model, build_module(spec))
    return model, module


def torch_params(module) -> dict[str, np.ndarray]:
    """The torch parameters under the NumPy names (``"1.W"`` is ``"1.weight".T``)."""
    out = {}
    for name, p in module.named_parameters():
        i, kind = name.split(".")
        value = p.detach().numpy()
        out[f"{i}.W" if kind == "weight" else f"{i}.b"] = value.T if kind == "weight" else value
    return out


def run_both(make_ours, make_theirs, steps: int = STEPS, seed: int = 0) -> None:
    model, module = twin_models(seed)
    ours, theirs = make_ours(model), make_theirs(module.parameters())
    loss = SoftmaxCrossEntropy()
    rng = np.random.default_rng(seed + 100)
    start = {k: v.copy() for k, v in model.named_parameters().items()}
    assert set(start) == set(torch_params(module)) == {"1.W", "1.b", "3.W", "3.b"}
    for step in range(steps):
        x = rng.standard_normal((8, 1, 3, 4)).astype(np.float32)
        y = rng.integers(0, 5, size=8)

        loss.forward(model.forward(x, training=True), y)
        model.backward(loss.backward(), input_grad=False)
        ours.step()

        theirs.zero_grad()
        F.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        theirs.step()

        ref = torch_params(module)
        for name, p in model.named_parameters().items():
            assert p.dtype == np.float32
            np.testing.assert_allclose(p, ref[name], rtol=RTOL, atol=ATOL, err_msg=f"step {step + 1}, {name}")
    moved = max(float(np.max(np.abs(p - start[k]))) for k, p in model.named_parameters().items())
    assert moved > 1e-3  # the comparison was not between two frozen models


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=0.1), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=True),
     dict(lr=0.1, weight_decay=0.01), dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.05)],
    ids=["plain", "momentum", "nesterov", "weight_decay", "nesterov_wd"],
)
def test_sgd_matches_torch(kwargs):
    run_both(lambda m: SGD(m, **kwargs), lambda ps: torch.optim.SGD(ps, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [dict(lr=0.01), dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6), dict(lr=0.01, weight_decay=0.1)],
    ids=["default", "betas_eps", "weight_decay"],
)
def test_adam_matches_torch(kwargs):
    run_both(lambda m: Adam(m, **kwargs), lambda ps: torch.optim.Adam(ps, **kwargs))


@pytest.mark.parametrize("wd", [0.0, 0.1, 0.5])
def test_adam_decoupled_matches_torch_adamw(wd):
    run_both(lambda m: Adam(m, lr=0.01, weight_decay=wd, decoupled=True),
             lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=wd))


def test_adam_coupled_and_decoupled_weight_decay_differ():
    results = []
    for decoupled in (False, True):
        model, _ = twin_models()
        opt = Adam(model, lr=0.01, weight_decay=0.5, decoupled=decoupled)
        for layer in model.layers:
            for g in layer.grads.values():
                g[...] = 0.01
        for _ in range(3):
            opt.step()
        results.append(model.named_parameters()["1.W"].copy())
    assert not np.allclose(results[0], results[1], rtol=1e-4, atol=1e-6)


def test_optimizer_state_round_trip_continues_identically():
    model_a, _ = twin_models()
    model_b, _ = twin_models()
    opt_a = Adam(model_a, lr=0.01)
    for layer in model_a.layers:
        for g in layer.grads.values():
            g[...] = 0.3
    for _ in range(3):
        opt_a.step()
    model_b.load_state_dict(model_a.state_dict())
    opt_b = Adam(model_b, lr=0.5)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.steps == 3 and opt_b.lr == 0.01
    for model in (model_a, model_b):
        for layer in model.layers:
            for g in layer.grads.values():
                g[...] = -0.2
    opt_a.step()
    opt_b.step()
    for k, v in model_a.named_parameters().items():
        assert np.array_equal(v, model_b.named_parameters()[k])


def test_optimizers_reject_bad_arguments():
    model, _ = twin_models()
    with pytest.raises(ValueError, match="learning rate"):
        SGD(model, lr=0)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(model, lr=0.1, nesterov=True)


# -- schedules -------------------------------------------------------------------------------------

def torch_lrs(make_scheduler, steps: int, lr: float = 1.0) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("total,final", [(10, 0.0), (37, 0.1), (100, 0.01), (1, 0.0)])
def test_cosine_equals_cosine_annealing_closed_form(total, final):
    sched = Cosine(total, warmup=0, final=final)
    for step in range(total + 1):
        closed = final + (1 - final) * (1 + math.cos(math.pi * step / total)) / 2
        assert sched(step) == pytest.approx(closed, abs=1e-12)
    assert sched(0) == pytest.approx(1.0) and sched(total) == pytest.approx(final, abs=1e-12)


@pytest.mark.parametrize("total,final", [(10, 0.0), (37, 0.1)])
def test_cosine_equals_torch_cosine_annealing_lr(total, final):
    base = 0.5
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=final * base),
                    total + 1, lr=base)
    ours = [base * Cosine(total, final=final)(s) for s in range(total + 1)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


def test_cosine_warmup_rises_linearly_then_decays():
    sched = Cosine(total=50, warmup=10, final=0.0)
    warm = np.array([sched(s) for s in range(10)])
    np.testing.assert_allclose(np.diff(warm), 0.1, atol=1e-12)  # equal increments
    assert warm[0] == pytest.approx(0.1) and warm[-1] == pytest.approx(1.0)
    assert sched(10) == pytest.approx(1.0)
    after = np.array([sched(s) for s in range(10, 51)])
    assert np.all(np.diff(after) < 0)
    assert after[-1] == pytest.approx(0.0, abs=1e-12)
    assert sched(30) == pytest.approx(0.5)  # half way through the decay


@pytest.mark.parametrize("step_size,gamma", [(1, 0.5), (3, 0.1), (7, 0.9)])
def test_step_decay_equals_torch_step_lr(step_size, gamma):
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=step_size, gamma=gamma), 30)
    ours = [StepDecay(step_size, gamma)(s) for s in range(30)]
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("total", [10, 20, 50, 101, 1000])
def test_onecycle_matches_torch_onecycle_lr(total):
    max_lr = 0.2
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=max_lr, total_steps=total, pct_start=0.3, anneal_strategy="cos", three_phase=False,
        div_factor=25.0, final_div_factor=1e4), total, lr=max_lr)
    ours = [OneCycle(total)(s) for s in range(total)]
    np.testing.assert_allclose(ours, np.array(ref) / max_lr, rtol=0, atol=1e-6)
    assert ours[0] == pytest.approx(1 / 25)
    assert max(ours) == pytest.approx(1.0, abs=1e-3)  # exactly 1 only when 0.3 * total is an integer
    assert ours[-1] == pytest.approx(1 / 25e4, abs=1e-9)


@pytest.mark.parametrize("pct,div,final_div", [(0.25, 10.0, 100.0), (0.5, 5.0, 1e3)])
def test_onecycle_matches_torch_with_other_settings(pct, div, final_div):
    total = 40
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=1.0, total_steps=total, pct_start=pct, anneal_strategy="cos", three_phase=False,
        div_factor=div, final_div_factor=final_div), total)
    ours = [OneCycle(total, pct=pct, div=div, final_div=final_div)(s) for s in range(total)]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_make_schedule_by_name():
    assert isinstance(make_schedule("constant", 100, 10), Constant)
    assert make_schedule("step", 90, 10)(30) == pytest.approx(0.1)
    assert make_schedule("step", 90, 10)(29) == pytest.approx(1.0)
    cos = make_schedule("cosine", 100, 10, warmup_epochs=2)
    assert cos(0) == pytest.approx(1 / 20) and cos(19) == pytest.approx(1.0)
    assert make_schedule("onecycle", 100, 10)(0) == pytest.approx(1 / 25)
    with pytest.raises(ValueError, match="unknown schedule"):
        make_schedule("linear", 100, 10)
