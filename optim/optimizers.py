"""The classic first-order rules, with torch.optim's update rules, names and defaults (DESIGN.md).

Every ``update`` returns the *change* to add to the parameters (``apply_updates`` adds it). In the
equations ``g`` is the gradient (negated first when ``maximize``), ``p`` the parameter, ``t = 1, 2, ...``
the step and ``lr`` the learning rate of step t (a schedule is called with ``t - 1``).
Each is a ``chain`` of the small transforms of ``optim/scaling.py`` and ``optim/transforms.py``:

    sgd       cast_to_params, [flip_sign], [add_decayed_weights], [scale_by_momentum], scale_by_learning_rate
    adagrad   cast_to_params, [flip_sign], [add_decayed_weights], scale_by_adagrad, scale_by_learning_rate
    rmsprop   cast_to_params, [flip_sign], [add_decayed_weights], scale_by_rms, [scale_by_momentum],
              scale_by_learning_rate
    adadelta  cast_to_params, [flip_sign], [add_decayed_weights], scale_by_adadelta, scale_by_learning_rate

The Adam family lives in ``optim/adaptive.py``, LAMB / Lion / Adafactor in ``optim/modern.py``.
"""

from __future__ import annotations

from .base import GradientTransformation, check_lr, check_range, nonzero
from .scaling import scale_by_adadelta, scale_by_adagrad, scale_by_momentum, scale_by_rms
from .transforms import decayed_weights_if, optimizer_chain, scale_by_learning_rate

__all__ = ["sgd", "adagrad", "rmsprop", "adadelta"]


def sgd(learning_rate=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
        maximize=False) -> GradientTransformation:
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

        g_t = grad + weight_decay * p_{t-1}
        b_1 = g_1,     b_t = momentum * b_{t-1} + (1 - dampening) * g_t          (t > 1)
        d_t = g_t + momentum * b_t  (nesterov)   |   b_t  (momentum > 0)   |   g_t  (no momentum)
        p_t = p_{t-1} - lr * d_t

    With dampening 0, b_t is the sum of past gradients weighted by momentum^k: a first-order low-pass
    filter whose steady-state gain on a constant gradient is 1 / (1 - momentum).
    """
    check_lr("sgd", learning_rate)
    check_range("sgd", "momentum", momentum, 0.0, None)
    check_range("sgd", "weight_decay", weight_decay, 0.0, None)
    check_range("sgd", "dampening", dampening, 0.0, 1.0, hi_open=False)
    if nesterov and (not nonzero(momentum) or nonzero(dampening)):
        raise ValueError("sgd: nesterov momentum requires momentum > 0 and dampening = 0 (as torch)")
    momentum_ = scale_by_momentum(momentum, dampening, nesterov) if nonzero(momentum) else None
    return optimizer_chain(decayed_weights_if(weight_decay), momentum_, scale_by_learning_rate(learning_rate),
                           maximize=maximize)


def adagrad(learning_rate=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
            maximize=False) -> GradientTransformation:
    """Adagrad (Duchi et al. 2011), as ``torch.optim.Adagrad`` (eps added *after* the square root).

        g_t = grad + weight_decay * p_{t-1}
        lr_t = lr / (1 + (t - 1) * lr_decay)
        s_t = s_{t-1} + g_t^2                          (s_0 = initial_accumulator_value)
        p_t = p_{t-1} - lr_t * g_t / (sqrt(s_t) + eps)
    """
    check_lr("adagrad", learning_rate)
    check_range("adagrad", "lr_decay", lr_decay, 0.0, None)
    check_range("adagrad", "weight_decay", weight_decay, 0.0, None)
    check_range("adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0, None)
    check_range("adagrad", "eps", eps, 0.0, None)
    return optimizer_chain(decayed_weights_if(weight_decay),
                           scale_by_adagrad(initial_accumulator_value, eps, lr_decay),
                           scale_by_learning_rate(learning_rate), maximize=maximize)


def rmsprop(learning_rate=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
            maximize=False) -> GradientTransformation:
    """RMSprop (Hinton's lecture 6e), as ``torch.optim.RMSprop``.

        g_t = grad + weight_decay * p_{t-1}
        v_t = alpha * v_{t-1} + (1 - alpha) * g_t^2
        a_t = alpha * a_{t-1} + (1 - alpha) * g_t                     (centered only)
        d_t = sqrt(v_t - a_t^2) + eps   (centered)   |   sqrt(v_t) + eps
        b_t = momentum * b_{t-1} + g_t / d_t,   p_t = p_{t-1} - lr * b_t     (momentum > 0)
        p_t = p_{t-1} - lr * g_t / d_t                                       (otherwise)

    Centering divides by an estimate of the gradient's standard deviation instead of its RMS.
    """
    check_lr("rmsprop", learning_rate)
    check_range("rmsprop", "alpha", alpha, 0.0, 1.0)
    check_range("rmsprop", "eps", eps, 0.0, None)
    check_range("rmsprop", "momentum", momentum, 0.0, None)
    check_range("rmsprop", "weight_decay", weight_decay, 0.0, None)
    return optimizer_chain(decayed_weights_if(weight_decay), scale_by_rms(alpha, eps, centered),
                           scale_by_momentum(momentum) if nonzero(momentum) else None,
                           scale_by_learning_rate(learning_rate), maximize=maximize)


def adadelta(learning_rate=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False) -> GradientTransformation:
    """Adadelta (Zeiler 2012), as ``torch.optim.Adadelta``: the step's units come from past steps.

        g_t = grad + weight_decay * p_{t-1}
        v_t = rho * v_{t-1} + (1 - rho) * g_t^2
        delta_t = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g_t
        u_t = rho * u_{t-1} + (1 - rho) * delta_t^2
        p_t = p_{t-1} - lr * delta_t
    """
    check_lr("adadelta", learning_rate)
    check_range("adadelta", "rho", rho, 0.0, 1.0, hi_open=False)
    check_range("adadelta", "eps", eps, 0.0, None)
    check_range("adadelta", "weight_decay", weight_decay, 0.0, None)
    return optimizer_chain(decayed_weights_if(weight_decay), scale_by_adadelta(rho, eps),
                           scale_by_learning_rate(learning_rate), maximize=maximize)
