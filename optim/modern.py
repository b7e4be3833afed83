"""Rules from the large-batch / large-model era: LAMB, Lion and Adafactor.

LAMB and Lion have no torch.optim counterpart and follow their papers; Adafactor follows
``torch.optim.Adafactor`` (which has no first moment). Notation as in ``optim/optimizers.py``. The chains
(scaling transforms in ``optim/scaling.py`` and ``optim/scaling_modern.py``):

    lamb       cast_to_params, scale_by_adam, [add_decayed_weights(mask)], scale_by_trust_ratio,
               scale_by_learning_rate
    lion       cast_to_params, scale_by_lion, [add_decayed_weights(mask)], scale_by_learning_rate
    adafactor  cast_to_params, [flip_sign], scale_by_factored_rms, scale_by_relative_step,
               [add_decayed_weights], scale_by_learning_rate
"""

from __future__ import annotations

from .base import GradientTransformation, check_lr, check_range
from .scaling import scale_by_adam
from .scaling_modern import scale_by_factored_rms, scale_by_lion, scale_by_relative_step, scale_by_trust_ratio
from .transforms import decayed_weights_if, optimizer_chain, scale_by_learning_rate

__all__ = ["lamb", "lion", "adafactor"]


def lamb(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.0, mask=None) -> GradientTransformation:
    """LAMB (You et al. 2020, Algorithm 2): Adam's direction plus decoupled decay, rescaled per parameter
    tensor by a trust ratio so every layer moves by the same *relative* amount.

        m_t = b1 m_{t-1} + (1 - b1) g_t           v_t = b2 v_{t-1} + (1 - b2) g_t^2
        r_t = (m_t / (1 - b1^t)) / (sqrt(v_t / (1 - b2^t)) + eps) + weight_decay * p_{t-1}
        p_t = p_{t-1} - lr * (||p_{t-1}|| / ||r_t||) * r_t        (ratio 1 where either norm is 0)

    Norms are per leaf (one leaf is one layer's tensor). ``mask`` selects the leaves that get weight decay.
    """
    check_lr("lamb", learning_rate)
    check_range("lamb", "b1", b1, 0.0, 1.0)
    check_range("lamb", "b2", b2, 0.0, 1.0)
    check_range("lamb", "eps", eps, 0.0, None)
    check_range("lamb", "weight_decay", weight_decay, 0.0, None)
    return optimizer_chain(scale_by_adam(b1, b2, eps), decayed_weights_if(weight_decay, mask),
                           scale_by_trust_ratio(), scale_by_learning_rate(learning_rate))


def lion(learning_rate=1e-4, b1=0.9, b2=0.99, weight_decay=0.0, mask=None) -> GradientTransformation:
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"): the sign of an
    interpolation between momentum and gradient, so every coordinate moves by exactly ``lr``.

        c_t = b1 m_{t-1} + (1 - b1) g_t
        p_t = p_{t-1} - lr * (sign(c_t) + weight_decay * p_{t-1})       (decay where mask is True)
        m_t = b2 m_{t-1} + (1 - b2) g_t

    Because the step has unit size per coordinate, Lion wants a learning rate 3-10x smaller than AdamW's
    and a weight decay 3-10x larger.
    """
    check_lr("lion", learning_rate)
    check_range("lion", "b1", b1, 0.0, 1.0)
    check_range("lion", "b2", b2, 0.0, 1.0)
    check_range("lion", "weight_decay", weight_decay, 0.0, None)
    return optimizer_chain(scale_by_lion(b1, b2), decayed_weights_if(weight_decay, mask),
                           scale_by_learning_rate(learning_rate))


def adafactor(learning_rate=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, weight_decay=0.0,
              maximize=False) -> GradientTransformation:
    """Adafactor (Shazeer & Stern 2018), as ``torch.optim.Adafactor``: Adam's second moment stored
    factored (one row and one column vector per matrix, O(R + C) memory instead of O(RC)), no first moment,
    relative step sizes and update clipping.

        1 - beta2_t = t^beta2_decay                       (1 at t = 1, so the first estimate is g_1^2)
        rho_t = min(lr, 1 / sqrt(t))                      alpha_t = max(eps2, RMS(p_{t-1})) * rho_t
        matrices (last two axes R x C):
            R_t = beta2_t R_{t-1} + (1 - beta2_t) mean_cols(g_t^2)     (R x 1)
            C_t = beta2_t C_{t-1} + (1 - beta2_t) mean_rows(g_t^2)     (1 x C)
            V_t = R_t C_t / max(mean(R_t), eps1)                       (rank-1 estimate of E[g^2])
        vectors:  V_t = beta2_t V_{t-1} + (1 - beta2_t) g_t^2
        U_t = g_t / sqrt(max(V_t, eps1^2))
        p_t = (1 - lr * weight_decay) p_{t-1} - alpha_t / max(1, RMS(U_t) / d) * U_t

    ``eps = (eps1, eps2)``; ``eps1 = None`` means the machine epsilon of the parameter's dtype.
    The factored estimate is exact when E[g^2] has rank one; it minimises the generalised KL divergence
    to the full second moment among rank-1 non-negative matrices.
    """
    check_lr("adafactor", learning_rate)
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(f"adafactor: eps must be a pair (eps1 or None, eps2), got {eps!r}")
    eps1, eps2 = eps
    check_range("adafactor", "beta2_decay", beta2_decay, -1e9, 0.0, hi_open=False)
    check_range("adafactor", "eps1", eps1, 0.0, None)
    check_range("adafactor", "eps2", eps2, 0.0, None)
    check_range("adafactor", "d", d, 1.0, None)
    check_range("adafactor", "weight_decay", weight_decay, 0.0, None)
    return optimizer_chain(scale_by_factored_rms(beta2_decay, eps1, d),
                           scale_by_relative_step(learning_rate, eps2), decayed_weights_if(weight_decay),
                           scale_by_learning_rate(learning_rate), maximize=maximize)
