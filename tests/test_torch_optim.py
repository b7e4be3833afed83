"""optim against torch.optim: 50-step trajectories on the same random problem (float32, rel. error <= 1e-5)
and the learning-rate schedulers step by step. Skipped when torch is not installed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import optim

torch = pytest.importorskip("torch")

STEPS = 50
TOL = 1e-5

# (id, our factory, our kwargs, torch class name, torch kwargs, ascend: optimise -loss with maximize=True)
CASES = [
    ("sgd", optim.sgd, dict(learning_rate=0.05), "SGD", dict(lr=0.05), False),
    ("sgd-momentum", optim.sgd, dict(learning_rate=0.05, momentum=0.9), "SGD", dict(lr=0.05, momentum=0.9), False),
    ("sgd-dampening", optim.sgd, dict(learning_rate=0.05, momentum=0.9, dampening=0.3),
     "SGD", dict(lr=0.05, momentum=0.9, dampening=0.3), False),
    ("sgd-nesterov", optim.sgd, dict(learning_rate=0.05, momentum=0.9, nesterov=True),
     "SGD", dict(lr=0.05, momentum=0.9, nesterov=True), False),
    ("sgd-weight_decay", optim.sgd, dict(learning_rate=0.05, momentum=0.5, weight_decay=0.1),
     "SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1), False),
    ("sgd-maximize", optim.sgd, dict(learning_rate=0.05, momentum=0.9, maximize=True),
     "SGD", dict(lr=0.05, momentum=0.9, maximize=True), True),
    ("adagrad", optim.adagrad, dict(learning_rate=0.1), "Adagrad", dict(lr=0.1), False),
    ("adagrad-options", optim.adagrad,
     dict(learning_rate=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.2, eps=1e-6),
     "Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.2, eps=1e-6), False),
    ("rmsprop", optim.rmsprop, dict(learning_rate=0.01), "RMSprop", dict(lr=0.01), False),
    ("rmsprop-centered", optim.rmsprop, dict(learning_rate=0.01, centered=True),
     "RMSprop", dict(lr=0.01, centered=True), False),
    ("rmsprop-momentum", optim.rmsprop, dict(learning_rate=0.01, momentum=0.9),
     "RMSprop", dict(lr=0.01, momentum=0.9), False),
    ("rmsprop-centered-momentum-wd", optim.rmsprop,
     dict(learning_rate=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1),
     "RMSprop", dict(lr=0.01, alpha=0.9, centered=True, momentum=0.5, weight_decay=0.1), False),
    ("adadelta", optim.adadelta, dict(), "Adadelta", dict(), False),
    ("adadelta-options", optim.adadelta, dict(learning_rate=0.5, rho=0.95, eps=1e-5, weight_decay=0.1),
     "Adadelta", dict(lr=0.5, rho=0.95, eps=1e-5, weight_decay=0.1), False),
    ("adam", optim.adam, dict(learning_rate=0.01), "Adam", dict(lr=0.01), False),
    ("adam-weight_decay", optim.adam, dict(learning_rate=0.01, b1=0.8, b2=0.99, weight_decay=0.1),
     "Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1), False),
    ("amsgrad", optim.adam, dict(learning_rate=0.01, amsgrad=True), "Adam", dict(lr=0.01, amsgrad=True), False),
    ("adamw", optim.adamw, dict(learning_rate=0.01, weight_decay=0.1), "AdamW", dict(lr=0.01, weight_decay=0.1),
     False),
    ("adamw-amsgrad", optim.adamw, dict(learning_rate=0.01, amsgrad=True),
     "AdamW", dict(lr=0.01, amsgrad=True), False),
    ("adamax", optim.adamax, dict(learning_rate=0.01, weight_decay=0.05),
     "Adamax", dict(lr=0.01, weight_decay=0.05), False),
    ("nadam", optim.nadam, dict(learning_rate=0.01), "NAdam", dict(lr=0.01), False),
    ("nadam-decoupled", optim.nadam, dict(learning_rate=0.01, weight_decay=0.1, decoupled_weight_decay=True),
     "NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), False),
    ("radam", optim.radam, dict(learning_rate=0.01), "RAdam", dict(lr=0.01), False),
    ("radam-decoupled", optim.radam, dict(learning_rate=0.01, weight_decay=0.1, decoupled_weight_decay=True),
     "RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True), False),
    ("adafactor", optim.adafactor, dict(learning_rate=0.01), "Adafactor", dict(lr=0.01), False),
    ("adafactor-wd", optim.adafactor, dict(learning_rate=0.05, weight_decay=0.1, d=1.5),
     "Adafactor", dict(lr=0.05, weight_decay=0.1, d=1.5), False),
]


def _problem():
    """A small non-convex regression, loss = mean((tanh(x W1 + b1) W2 - y)^2), with a fresh random mini-batch
    at every step (deterministic full-batch gradients would make centered RMSprop's sqrt(v - a^2) a
    cancellation of nearly equal numbers, which amplifies last-bit differences in the gradients)."""
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(STEPS, 16, 4)).astype(np.float32),
            "y": rng.normal(size=(STEPS, 16, 2)).astype(np.float32)}
    params = {"w1": rng.normal(size=(4, 5)).astype(np.float32) * 0.5, "b1": rng.normal(size=(5,)).astype(np.float32),
              "w2": rng.normal(size=(5, 2)).astype(np.float32) * 0.5}
    return data, params


def _loss_jax(p, data):
    h = jnp.tanh(data["x"] @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] - data["y"]) ** 2)


def _loss_torch(p, data):
    h = torch.tanh(torch.from_numpy(data["x"]) @ p["w1"] + p["b1"])
    return torch.mean((h @ p["w2"] - torch.from_numpy(data["y"])) ** 2)


def _jax_trajectory(opt, params, data, ascend):
    sign = -1.0 if ascend else 1.0
    grad = jax.grad(lambda p, batch: sign * _loss_jax(p, batch))

    def step(carry, batch):
        p, s = carry
        u, s = opt.update(grad(p, batch), s, p)
        p = optim.apply_updates(p, u)
        return (p, s), p

    params = jax.tree.map(jnp.asarray, params)
    _, traj = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), data))(params)
    return {k: np.asarray(v) for k, v in traj.items()}


def _torch_trajectory(cls_name, kwargs, params, data, ascend):
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    cls = getattr(torch.optim, cls_name)
    extra = {"foreach": False} if "foreach" in cls.__init__.__code__.co_varnames else {}
    opt = cls(list(p.values()), **kwargs, **extra)
    traj = {k: [] for k in p}
    for t in range(STEPS):
        opt.zero_grad()
        loss = _loss_torch(p, {k: v[t] for k, v in data.items()})
        (-loss if ascend else loss).backward()
        opt.step()
        for k, v in p.items():
            traj[k].append(v.detach().numpy().copy())
    return {k: np.stack(v) for k, v in traj.items()}


def relative_error(ours, theirs):
    """max over steps and leaves of max|ours - theirs| / max|theirs| (per leaf, per step)."""
    worst = 0.0
    for k in theirs:
        diff = np.abs(ours[k] - theirs[k]).reshape(STEPS, -1).max(axis=1)
        scale = np.abs(theirs[k]).reshape(STEPS, -1).max(axis=1)
        worst = max(worst, float(np.max(diff / np.maximum(scale, 1e-30))))
    return worst


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_trajectory_matches_torch(case):
    name, factory, kw, cls_name, torch_kw, ascend = case
    data, params = _problem()
    ours = _jax_trajectory(factory(**kw), params, data, ascend)
    theirs = _torch_trajectory(cls_name, torch_kw, params, data, ascend)
    err = relative_error(ours, theirs)
    print(f"{name}: {err:.2e}")
    moved = max(float(np.abs(theirs[k][-1] - params[k]).max()) for k in params)
    assert moved > 1e-3, f"{name}: the torch trajectory barely moved ({moved}), the test would be weak"
    assert err <= TOL, f"{name}: relative error vs torch.optim.{cls_name} = {err:.2e} > {TOL}"


def _torch_lrs(make_scheduler, steps, lr=1.0, momentum=0.0):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
    sched = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(lrs)


ONE_CYCLE = [
    dict(max_lr=0.1, total_steps=100),
    dict(max_lr=0.5, total_steps=77, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
    dict(max_lr=0.1, total_steps=100, anneal_strategy="linear"),
    dict(max_lr=0.1, total_steps=90, three_phase=True),
    dict(max_lr=1.0, total_steps=64, pct_start=0.4, three_phase=True, anneal_strategy="linear"),
]


@pytest.mark.parametrize("kw", ONE_CYCLE, ids=[str(i) for i in range(len(ONE_CYCLE))])
def test_one_cycle_matches_torch(kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, **kw), kw["total_steps"],
                            momentum=0.9)
    ours = np.asarray(optim.one_cycle(**kw)(jnp.arange(kw["total_steps"])))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


RESTARTS = [dict(T_0=10), dict(T_0=7, eta_min=0.01), dict(T_0=3, T_mult=2), dict(T_0=5, T_mult=3, eta_min=0.001)]


@pytest.mark.parametrize("kw", RESTARTS, ids=[str(i) for i in range(len(RESTARTS))])
def test_cosine_restarts_matches_torch(kw):
    steps = 200
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, **kw), steps, lr=0.3)
    ours = np.asarray(optim.cosine_restarts(0.3, **kw)(jnp.arange(steps)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)


def test_simple_schedulers_match_torch():
    steps = 60   # CosineAnnealingLR is compared up to T_max: past it torch's rises again, ours stays at the minimum
    lr = 0.2
    sch = torch.optim.lr_scheduler
    pairs = [
        (lambda o: sch.StepLR(o, step_size=7, gamma=0.5), optim.step_decay(lr, 7, 0.5)),
        (lambda o: sch.MultiStepLR(o, milestones=[10, 25, 40], gamma=0.3),
         optim.multistep_decay(lr, [10, 25, 40], 0.3)),
        (lambda o: sch.ExponentialLR(o, gamma=0.95), optim.exponential_decay(lr, 0.95)),
        (lambda o: sch.CosineAnnealingLR(o, T_max=59, eta_min=0.01), optim.cosine_decay(lr, 59, 0.01)),
        (lambda o: sch.PolynomialLR(o, total_iters=40, power=2.0), optim.polynomial_decay(lr, 40, 2.0)),
    ]
    for make, ours in pairs:
        theirs = _torch_lrs(make, steps, lr=lr)
        np.testing.assert_allclose(np.asarray(ours(jnp.arange(steps))), theirs, rtol=1e-6, atol=1e-12)


def test_schedule_inside_optimizer_matches_torch_scheduler():
    """A schedule passed as learning_rate is called with the number of updates done, as torch's scheduler."""
    data, params = _problem()
    ours = _jax_trajectory(optim.adam(optim.one_cycle(0.05, STEPS)), params, data, False)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = torch.optim.Adam(list(p.values()), lr=0.05, foreach=False)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=STEPS, cycle_momentum=False)
    theirs = {k: [] for k in p}
    for t in range(STEPS):
        opt.zero_grad()
        _loss_torch(p, {k: v[t] for k, v in data.items()}).backward()
        opt.step()
        sched.step()
        for k, v in p.items():
            theirs[k].append(v.detach().numpy().copy())
    assert relative_error(ours, {k: np.stack(v) for k, v in theirs.items()}) <= TOL
