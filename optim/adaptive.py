"""The Adam family, with torch.optim's update rules, names and defaults (``betas`` are ``b1``, ``b2``).

In the equations ``g`` is the gradient (negated first when ``maximize``), ``p`` the parameter,
``t = 1, 2, ...`` the step and ``lr`` the learning rate of step t (a schedule is called with ``t - 1``).
Each is a ``chain`` (``optim/scaling.py`` has the scaling transforms and why Adam corrects its bias):

    adam    cast_to_params, [flip_sign], [add_decayed_weights], scale_by_adam, scale_by_learning_rate
    adamw   cast_to_params, [flip_sign], scale_by_adam, [add_decayed_weights(mask)], scale_by_learning_rate
    adamax  cast_to_params, [flip_sign], [add_decayed_weights], scale_by_adamax, scale_by_learning_rate
    nadam   cast_to_params, [flip_sign], [add_decayed_weights], scale_by_nadam, [add_decayed_weights],
            scale_by_learning_rate       (the decay before the scaling, or after it when decoupled)
    radam   as nadam with scale_by_radam

A weight decay before the scaling is torch's L2 term (it passes through the 1/sqrt(v) preconditioner);
after it, it is decoupled decay (``p <- p - lr wd p``).
"""

from __future__ import annotations

from .base import GradientTransformation, check_lr, check_range
from .scaling import scale_by_adam, scale_by_adamax, scale_by_nadam, scale_by_radam
from .transforms import decayed_weights_if, optimizer_chain, scale_by_learning_rate

__all__ = ["adam", "adamw", "adamax", "nadam", "radam"]


def _check(name, learning_rate, b1, b2, eps, weight_decay):
    check_lr(name, learning_rate)
    check_range(name, "b1", b1, 0.0, 1.0)
    check_range(name, "b2", b2, 0.0, 1.0)
    check_range(name, "eps", eps, 0.0, None)
    check_range(name, "weight_decay", weight_decay, 0.0, None)


def adam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
         maximize=False) -> GradientTransformation:
    """Adam (Kingma & Ba 2015), as ``torch.optim.Adam`` (weight decay is an L2 term added to the gradient):

        g_t = grad + weight_decay * p_{t-1}
        m_t = b1 m_{t-1} + (1 - b1) g_t            v_t = b2 v_{t-1} + (1 - b2) g_t^2
        v'_t = max(v'_{t-1}, v_t)  (amsgrad)       v'_t = v_t  (otherwise)
        p_t = p_{t-1} - lr / (1 - b1^t) * m_t / (sqrt(v'_t) / sqrt(1 - b2^t) + eps)
    """
    _check("adam", learning_rate, b1, b2, eps, weight_decay)
    return optimizer_chain(decayed_weights_if(weight_decay), scale_by_adam(b1, b2, eps, amsgrad),
                           scale_by_learning_rate(learning_rate), maximize=maximize)


def adamw(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2, amsgrad=False, maximize=False,
          mask=None) -> GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019), as ``torch.optim.AdamW``: weight decay decoupled from the gradient.

        p'_{t-1} = p_{t-1} - lr * weight_decay * p_{t-1}               (where mask is True)
        m_t, v_t, v'_t as in adam with g_t = grad (no L2 term)
        p_t = p'_{t-1} - lr / (1 - b1^t) * m_t / (sqrt(v'_t) / sqrt(1 - b2^t) + eps)

    With an L2 term the decay passes through the 1/sqrt(v) preconditioner, so parameters with large
    gradients are decayed less; decoupling shrinks every weight by the same factor (1 - lr * wd) per step.
    ``mask``: a pytree of bools like the params, a callable ``params -> mask``, or a regex on leaf paths
    ("layers/0/w") selecting the leaves to decay; e.g. ``optim.decay_mask`` (no decay on vectors: biases
    and norm scales).
    """
    _check("adamw", learning_rate, b1, b2, eps, weight_decay)
    return optimizer_chain(scale_by_adam(b1, b2, eps, amsgrad), decayed_weights_if(weight_decay, mask),
                           scale_by_learning_rate(learning_rate), maximize=maximize)


def adamax(learning_rate=2e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
           maximize=False) -> GradientTransformation:
    """Adamax (Kingma & Ba 2015, section 7), as ``torch.optim.Adamax``: Adam with the infinity norm.

        g_t = grad + weight_decay * p_{t-1}
        m_t = b1 m_{t-1} + (1 - b1) g_t
        u_t = max(b2 u_{t-1}, |g_t| + eps)
        p_t = p_{t-1} - lr / (1 - b1^t) * m_t / u_t
    """
    _check("adamax", learning_rate, b1, b2, eps, weight_decay)
    return optimizer_chain(decayed_weights_if(weight_decay), scale_by_adamax(b1, b2, eps),
                           scale_by_learning_rate(learning_rate), maximize=maximize)


def nadam(learning_rate=2e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
          decoupled_weight_decay=False, maximize=False) -> GradientTransformation:
    """NAdam (Dozat 2016), as ``torch.optim.NAdam``: Adam with Nesterov momentum and a momentum warm-up.

        g_t = grad + weight_decay * p_{t-1}     (or p_{t-1} *= 1 - lr * weight_decay if decoupled)
        mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))          P_t = prod_{k<=t} mu_k
        m_t = b1 m_{t-1} + (1 - b1) g_t                          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        d_t = sqrt(v_t / (1 - b2^t)) + eps
        p_t = p_{t-1} - lr (1 - mu_t) / (1 - P_t) * g_t / d_t
                      - lr mu_{t+1} / (1 - P_t mu_{t+1}) * m_t / d_t

    The first term is the current gradient's share, the second the momentum looked ahead one step.
    """
    _check("nadam", learning_rate, b1, b2, eps, weight_decay)
    check_range("nadam", "momentum_decay", momentum_decay, 0.0, None)
    decay = decayed_weights_if(weight_decay)
    return optimizer_chain(None if decoupled_weight_decay else decay, scale_by_nadam(b1, b2, eps, momentum_decay),
                           decay if decoupled_weight_decay else None, scale_by_learning_rate(learning_rate),
                           maximize=maximize)


def radam(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled_weight_decay=False,
          maximize=False) -> GradientTransformation:
    """RAdam (Liu et al. 2020), as ``torch.optim.RAdam``: Adam whose adaptive step is switched on only once
    the variance of the adaptive learning rate is tractable, and then rectified.

        g_t = grad + weight_decay * p_{t-1}     (or p_{t-1} *= 1 - lr * weight_decay if decoupled)
        m_t = b1 m_{t-1} + (1 - b1) g_t          v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m^_t = m_t / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1               rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        if rho_t > 5:
            r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
            p_t = p_{t-1} - lr * m^_t * r_t * sqrt(1 - b2^t) / (sqrt(v_t) + eps)
        else:
            p_t = p_{t-1} - lr * m^_t                                          (SGD with momentum)
    """
    _check("radam", learning_rate, b1, b2, eps, weight_decay)
    decay = decayed_weights_if(weight_decay)
    return optimizer_chain(None if decoupled_weight_decay else decay, scale_by_radam(b1, b2, eps),
                           decay if decoupled_weight_decay else None, scale_by_learning_rate(learning_rate),
                           maximize=maximize)
