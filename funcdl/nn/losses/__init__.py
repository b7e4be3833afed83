"""Loss functions with hand-derived gradients, following ``torch.nn.functional``'s definitions.

The package holds ``classification`` (cross-entropy against labels or probabilities, NLL, multiclass hinge),
``regression`` (MSE, L1, Huber, smooth L1), ``probabilistic`` (binary cross-entropies, KL divergence) and ``gan``
(the discriminator's and generator's losses of five GAN formulations, the WGAN-GP gradient penalty), with
the reductions, checks and log-softmax they share in ``_common``; every name is re-exported here.

Reductions follow torch: ``"mean"`` (default), ``"sum"`` or ``"none"`` (one value per element or example);
``kl_div`` also has ``"batchmean"``. Integer labels and class weights are inputs without gradients (their
cotangent is ``None``); float targets (regression targets, probability targets) get gradients, as in torch.

Layout: the class axis is the LAST axis (``(..., C)``), torch's is axis 1; labels have the logits' shape
without it.

Shapes are never broadcast silently: an input and its target must have the same shape (torch only warns
for ``mse_loss(pred (N, 1), target (N,))`` and then broadcasts to (N, N); here it is a ``ValueError``).
Only weights broadcast, and only in the documented way (class weights ``(C,)``; the element weights of the
binary cross-entropies broadcast *to* the input's shape, never enlarging it).

Bad labels: outside ``jit`` an out-of-range label raises ``ValueError``. Inside ``jit`` values cannot be
inspected, so an out-of-range label (that is not ``ignore_index``) turns that example's loss into NaN, and
the NaN propagates into the reduced loss; its gradient row is zero.
"""

from ._common import KL_REDUCTIONS, REDUCTIONS
from .classification import (
    cross_entropy,
    multi_margin_loss,
    nll_loss,
    softmax_cross_entropy,
    softmax_cross_entropy_with_probs,
)
from .gan import GAN_KINDS, gan_d_loss, gan_g_loss, gradient_penalty
from .probabilistic import binary_cross_entropy, binary_cross_entropy_with_logits, kl_div
from .regression import huber_loss, l1_loss, mse_loss, smooth_l1_loss

__all__ = [
    "softmax_cross_entropy", "cross_entropy", "softmax_cross_entropy_with_probs", "nll_loss", "mse_loss",
    "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits", "binary_cross_entropy",
    "kl_div", "multi_margin_loss", "REDUCTIONS", "KL_REDUCTIONS", "gan_d_loss", "gan_g_loss", "gradient_penalty",
    "GAN_KINDS",
]
