"""optim's small transforms: every named optimizer equals its chain written out here, weight decay where the
chain puts it (coupled or decoupled) and under a mask, one state field for the step count and the learning
rate, step-aware transforms fed by the chain, and a new optimizer in three lines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl import optim

O = optim


def _params():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    return {"w": jax.random.normal(k[0], (3, 4), jnp.float64), "b": jax.random.normal(k[1], (4,), jnp.float64),
            "t": jax.random.normal(k[2], (2, 2, 3), jnp.float64), "none": None}


def _trajectory(opt, steps=6):
    """``steps`` updates on a fixed non-quadratic loss; the parameters after each step."""
    loss = lambda p: jnp.sum(jnp.sin(p["w"]) ** 2) + jnp.sum((p["b"] - 0.3) ** 4) + jnp.sum(p["t"] * p["t"][::-1])

    def step(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s, p)
        p = O.apply_updates(p, u)
        return (p, s), p

    p = _params()
    return jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=steps))(p)[1]


def _lr(x):
    return O.scale_by_learning_rate(x)


# name -> (the named optimizer, the same optimizer written out as a chain of transforms)
CHAINS = {
    "sgd": (O.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True),
            O.chain(O.cast_to_params(), O.flip_sign(), O.add_decayed_weights(0.1),
                    O.scale_by_momentum(0.9, nesterov=True), _lr(0.05))),
    "adagrad": (O.adagrad(0.1, lr_decay=0.01, initial_accumulator_value=0.1),
                O.chain(O.cast_to_params(), O.scale_by_adagrad(0.1, 1e-10, lr_decay=0.01), _lr(0.1))),
    "rmsprop": (O.rmsprop(0.01, centered=True, momentum=0.5),
                O.chain(O.cast_to_params(), O.scale_by_rms(0.99, 1e-8, centered=True), O.scale_by_momentum(0.5),
                        _lr(0.01))),
    "adadelta": (O.adadelta(0.5, rho=0.95, weight_decay=0.01),
                 O.chain(O.cast_to_params(), O.add_decayed_weights(0.01), O.scale_by_adadelta(0.95), _lr(0.5))),
    "adam": (O.adam(0.01, weight_decay=0.1, amsgrad=True),
             O.chain(O.cast_to_params(), O.add_decayed_weights(0.1), O.scale_by_adam(amsgrad=True), _lr(0.01))),
    "adamw": (O.adamw(O.cosine_decay(0.01, 6), weight_decay=0.1, mask=O.decay_mask),
              O.chain(O.cast_to_params(), O.scale_by_adam(), O.add_decayed_weights(0.1, O.decay_mask),
                      _lr(O.cosine_decay(0.01, 6)))),
    "adamax": (O.adamax(0.01, maximize=True),
               O.chain(O.cast_to_params(), O.flip_sign(), O.scale_by_adamax(), _lr(0.01))),
    "nadam": (O.nadam(0.01, weight_decay=0.1, decoupled_weight_decay=True),
              O.chain(O.cast_to_params(), O.scale_by_nadam(), O.add_decayed_weights(0.1), _lr(0.01))),
    "radam": (O.radam(0.01, weight_decay=0.1),
              O.chain(O.cast_to_params(), O.add_decayed_weights(0.1), O.scale_by_radam(), _lr(0.01))),
    "lamb": (O.lamb(0.01, weight_decay=0.1),
             O.chain(O.cast_to_params(), O.scale_by_adam(eps=1e-6), O.add_decayed_weights(0.1),
                     O.scale_by_trust_ratio(), _lr(0.01))),
    "lion": (O.lion(1e-3, weight_decay=0.5, mask="w"),
             O.chain(O.cast_to_params(), O.scale_by_lion(0.9, 0.99), O.add_decayed_weights(0.5, "w"), _lr(1e-3))),
    "adafactor": (O.adafactor(0.5, weight_decay=0.1),
                  O.chain(O.cast_to_params(), O.scale_by_factored_rms(), O.scale_by_relative_step(0.5),
                          O.add_decayed_weights(0.1), _lr(0.5))),
}


def test_every_optimizer_has_its_chain_written_out():
    assert set(CHAINS) == set(O.OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_named_optimizer_equals_its_chain(name):
    named, written = CHAINS[name]
    ours, theirs = _trajectory(named), _trajectory(written)
    moved = max(float(jnp.max(jnp.abs(a[-1] - a[0]))) for a in jax.tree.leaves(theirs))
    assert moved > 1e-4
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)


def _fields(state, name):
    """Every entry called ``name`` in a nested optimizer state."""
    found = []
    if hasattr(state, "_fields"):
        found += [getattr(state, name)] if name in state._fields else []
        children = tuple(state)
    elif isinstance(state, (tuple, list)):
        children = state
    elif isinstance(state, dict):
        children = tuple(state.values())
    else:
        return found
    for c in children:
        found += _fields(c, name)
    return found


@pytest.mark.parametrize("name", sorted(O.OPTIMIZERS))
def test_count_and_learning_rate_live_in_one_field(name):
    sched = O.linear(0.02, 0.01, 10)
    wrapped = O.skip_not_finite(O.lookahead(O.ema_params(O.accumulate(O.create(name, sched), 1)), 2))
    for opt in [O.create(name, sched), O.chain(O.clip_by_global_norm(1.0), O.create(name, sched)), wrapped]:
        p = _params()
        s = opt.init(p)
        for _ in range(3):
            _, s = opt.update(jax.tree.map(jnp.ones_like, p), s, p)
        counts, lrs = _fields(s, "count"), _fields(s, "lr")
        assert len(counts) == 1 and len(lrs) == 1
        assert isinstance(_learning_rate_state(s), O.LearningRateState)
        assert int(counts[0]) == 3 == int(O.find_state_field(s, "count"))
        assert float(O.current_lr(s)) == pytest.approx(float(sched(2)), rel=1e-6)


def _learning_rate_state(state):
    if isinstance(state, O.LearningRateState):
        return state
    for c in (state if isinstance(state, tuple) else ()):
        found = _learning_rate_state(c)
        if found is not None:
            return found
    return None


def test_add_decayed_weights_respects_a_mask():
    params = {"w": jnp.full((2, 2), 2.0), "b": jnp.full(2, 2.0), "scale": jnp.full(2, 2.0)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for mask in [O.decay_mask, "^w$", {"w": True, "b": False, "scale": False}, lambda p: {"w": True, "b": False,
                                                                                       "scale": False}]:
        t = O.add_decayed_weights(0.1, mask)
        u, _ = t.update(zeros, t.init(params), params)
        np.testing.assert_allclose(u["w"], 0.2)
        np.testing.assert_array_equal(u["b"], 0.0)
        np.testing.assert_array_equal(u["scale"], 0.0)
    with pytest.raises(ValueError, match="mask tree does not match"):
        t = O.add_decayed_weights(0.1, {"w": True, "b": False})
        t.update(zeros, t.init(params), params)


def test_decay_before_the_scaling_is_coupled_and_after_it_decoupled():
    """With a zero gradient, decoupled decay steps exactly -lr wd p; coupled decay passes through Adam's
    preconditioner, whose first step is -lr sign(g) = -lr sign(p) whatever the size of wd p."""
    params = {"w": jnp.array([2.0, -0.5], jnp.float64)}
    zeros = {"w": jnp.zeros(2, jnp.float64)}
    decoupled = O.chain(O.scale_by_adam(), O.add_decayed_weights(0.1), _lr(0.01))
    u, _ = decoupled.update(zeros, decoupled.init(params), params)
    np.testing.assert_allclose(u["w"], -0.01 * 0.1 * np.array([2.0, -0.5]), rtol=1e-14)
    coupled = O.chain(O.add_decayed_weights(0.1), O.scale_by_adam(eps=0.0), _lr(0.01))
    u, _ = coupled.update(zeros, coupled.init(params), params)
    np.testing.assert_allclose(u["w"], [-0.01, 0.01], rtol=1e-14)


def test_new_optimizer_in_three_lines():
    """Adam with decoupled decay on matrices only, a warm-up and gradient clipping: a chain, nothing else."""
    opt = O.chain(O.clip_by_global_norm(1.0), O.scale_by_adam(b1=0.8), O.add_decayed_weights(1e-3, O.decay_mask),
                  O.scale_by_learning_rate(O.warmup_cosine(0.05, 5, 200)))
    f = lambda p: jnp.sum((p["w"] - 1.0) ** 2) + jnp.sum((p["b"] + 2.0) ** 2)
    p = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}

    def step(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(f)(p), s, p)
        return (O.apply_updates(p, u), s), None

    (p, s), _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=200))(p)
    assert float(f(p)) < 1e-2 and int(O.find_state_field(s, "count")) == 200
    # the minimal chain is adam itself
    for a, b in zip(jax.tree.leaves(_trajectory(O.chain(O.scale_by_adam(), _lr(0.01)))),
                    jax.tree.leaves(_trajectory(O.adam(0.01))), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-14)


def test_step_aware_transforms_take_the_count_from_the_chain():
    p = {"x": jnp.array([1.0, -2.0], jnp.float64)}
    g = {"x": jnp.array([0.3, 0.4], jnp.float64)}
    t = O.scale_by_adam()
    with pytest.raises(ValueError, match="scale_by_adam: this transform needs the step count"):
        t.update(g, t.init(p), p)
    with pytest.raises(ValueError, match="needs the step count"):
        O.chain(O.scale_by_adam(), O.scale(-0.1)).update(g, O.chain(O.scale_by_adam(), O.scale(-0.1)).init(p), p)
    u, _ = t.update(g, t.init(p), p, count=0)          # standalone: pass the count yourself
    np.testing.assert_allclose(u["x"], [1.0, 1.0], rtol=1e-6)
    # masked hands the chain's count to a step-aware transform; the unselected leaf passes through
    opt = O.chain(O.masked(O.scale_by_adam(), {"x": True, "y": False}), _lr(0.1))
    pp, gg = {"x": p["x"], "y": jnp.ones(2)}, {"x": g["x"], "y": jnp.full(2, 3.0)}
    s = opt.init(pp)
    for _ in range(3):
        u, s = opt.update(gg, s, pp)
    ref = O.adam(0.1)
    rs = ref.init(p)
    for _ in range(3):
        r, rs = ref.update(g, rs, p)
    np.testing.assert_allclose(u["x"], r["x"], rtol=1e-14)
    np.testing.assert_allclose(u["y"], -0.3)


def test_momentum_starts_at_the_first_gradient_as_torch():
    """b_1 = g_1 (not (1 - dampening) g_1), then b_t = m b_{t-1} + (1 - dampening) g_t."""
    opt = O.chain(O.scale_by_momentum(0.9, dampening=0.5), O.scale(1.0), _lr(1.0))
    p = {"x": jnp.zeros(1, jnp.float64)}
    s = opt.init(p)
    seen = []
    for g in [2.0, 4.0, 0.0]:
        u, s = opt.update({"x": jnp.array([g], jnp.float64)}, s, p)
        seen.append(-float(u["x"][0]))
    np.testing.assert_allclose(seen, [2.0, 0.9 * 2 + 0.5 * 4, 0.9 * 3.8], rtol=1e-14)


def test_moment_helpers_and_head_transforms():
    m, g = {"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([3.0, -2.0])}
    np.testing.assert_allclose(O.ema(m, g, 0.75)["a"], [1.5, 1.0])
    np.testing.assert_allclose(O.ema_sq(m, g, 0.75)["a"], [0.75 + 2.25, 1.5 + 1.0])
    assert float(O.bias_correction(0.9, jnp.asarray(2.0))) == pytest.approx(0.19, rel=1e-12)
    u, _ = O.flip_sign().update(g, O.flip_sign().init(g))
    np.testing.assert_array_equal(u["a"], [-3.0, 2.0])
    params = {"a": jnp.ones(2, jnp.float32)}
    u, _ = O.cast_to_params().update({"a": jnp.ones(2, jnp.float64)}, O.cast_to_params().init(params), params)
    assert u["a"].dtype == jnp.float32
    with pytest.raises(ValueError, match="grads has no entry at 'a'"):
        O.cast_to_params().update({"b": jnp.ones(2)}, O.cast_to_params().init(params), params)
