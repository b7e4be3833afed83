"""funcdl: deep learning written as mathematics in JAX.

Every layer and loss is a registered *primitive*: a reference forward in plain ``jax.numpy``, a forward that
keeps residuals, and a hand-derived backward, wired into ``jax.custom_vjp``. ``jax.grad`` of anything built
from them runs the hand-derived rules; ``funcdl.autodiff(fn)`` differentiates the references instead.
"""

from .core import xla
from .core.primitive import (
    REGISTRY,
    Example,
    Instead,
    Primitive,
    autodiff,
    get,
    primitive,
    registered,
    use_reference,
    with_rules,
)
from .nn import activations, boxes, init, linear, losses, nf4, quant, relpos, render, timestep
from .nn import dropout as _dropout_module
from .nn.activations import (
    elu,
    gelu,
    get_activation,
    hard_sigmoid,
    hard_tanh,
    identity,
    leaky_relu,
    log_softmax,
    mish,
    relu,
    selu,
    sigmoid,
    silu,
    softmax,
    softplus,
    swish,
    tanh,
)
from .nn.adaptive_pool import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
)
from .nn.attention import dot_product_attention, multi_head_attention
from .nn.boxes import giou_loss
from .nn.bptt import gru, lengths_to_mask, lstm, rnn
from .nn.conv import conv1d, conv2d, conv3d
from .nn.conv_transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d
from .nn.dropout import dropout
from .nn.embedding import embedding
from .nn.feedforward import gelu_mlp, swiglu, tied_softmax_cross_entropy
from .nn.flash import flash_attention
from .nn.latent import bernoulli_log_likelihood, gaussian_nll_loss, kl_normal, kl_normal_normal, reparameterize
from .nn.layernorm import layer_norm, rms_norm
from .nn.linear import dense
from .nn.lora import lora_dense, lora_weight
from .nn.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    gan_d_loss,
    gan_g_loss,
    gradient_penalty,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    multi_margin_loss,
    nll_loss,
    smooth_l1_loss,
    softmax_cross_entropy,
    softmax_cross_entropy_with_probs,
)
from .nn.nf4 import nf4_lora_dense
from .nn.norm import batch_norm, batch_norm_apply, batch_norm_eval, batch_norm_init, group_norm, instance_norm
from .nn.pool import (
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    global_avg_pool,
    global_max_pool,
    max_pool1d,
    max_pool2d,
    max_pool3d,
)
from .nn.positional import rope
from .nn.quant import fake_quant, lsq_quant
from .nn.recurrent import gru_cell, lstm_cell, rnn_cell
from .nn.relpos import relative_logits_2d
from .nn.render import posenc, volume_render
from .nn.spatial import concat_channels, flatten, spatial_dropout, squeeze_excitation
from .nn.spectral import spectral_norm
from .nn.style import minibatch_stddev, modulated_conv2d
from .nn.timestep import timestep_embedding
from .nn.upsample import upsample_bilinear, upsample_nearest

__version__ = "0.1.0"

__all__ = [
    "giou_loss", "relative_logits_2d", "posenc", "volume_render", "timestep_embedding", "boxes", "relpos", "render",
    "timestep",
    "concat_channels", "flatten", "spatial_dropout", "squeeze_excitation", "upsample_bilinear", "upsample_nearest",
    "batch_norm", "batch_norm_apply", "batch_norm_eval", "batch_norm_init", "group_norm", "instance_norm",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d", "global_avg_pool",
    "global_max_pool", "max_pool1d", "max_pool2d", "max_pool3d",
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "REGISTRY", "Example", "Instead", "Primitive", "autodiff", "get", "primitive", "registered", "use_reference",
    "with_rules",
    "activations", "init", "linear", "losses", "xla", "dense", "dropout", "cross_entropy", "softmax_cross_entropy",
    "softmax_cross_entropy_with_probs", "nll_loss", "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss",
    "binary_cross_entropy_with_logits", "binary_cross_entropy", "kl_div", "multi_margin_loss",
    "embedding", "rnn_cell", "lstm_cell", "gru_cell", "rnn", "lstm", "gru", "lengths_to_mask",
    "layer_norm", "rms_norm", "dot_product_attention", "multi_head_attention",
    "gelu_mlp", "swiglu", "tied_softmax_cross_entropy", "flash_attention", "rope", "lora_dense", "lora_weight",
    "elu", "gelu", "get_activation", "hard_sigmoid", "hard_tanh", "identity", "leaky_relu", "log_softmax",
    "mish", "relu", "selu", "sigmoid", "silu", "softmax", "softplus", "swish", "tanh",
    "reparameterize", "kl_normal", "kl_normal_normal", "gaussian_nll_loss", "bernoulli_log_likelihood",
    "gan_d_loss", "gan_g_loss", "gradient_penalty", "modulated_conv2d", "minibatch_stddev",
    "spectral_norm", "fake_quant", "lsq_quant", "nf4_lora_dense", "nf4", "quant",
]
del _dropout_module
