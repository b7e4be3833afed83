"""Bad input to the core primitives gives a clear error: the message names the primitive and the shapes, and
says what to do. Nothing broadcasts a wrong shape silently. Shape and dtype errors are static, so they
raise inside jit as well; label values can only be checked outside jit (inside, see test_losses.py: NaN).

Decision (documented in funcdl/nn/losses): an input and its target must have exactly the same shape.
torch's ``mse_loss(pred (N, 1), target (N,))`` warns and broadcasts to an (N, N) loss, a classic silent bug;
here it is a ValueError that suggests the reshape.
"""

import re

import jax
import jax.numpy as jnp
import pytest

import funcdl as fd

N, C = 4, 3
X = jnp.ones((N, C))
LABELS = jnp.array([0, 1, 2, 1])


def _shapes_in(message, *shapes):
    return all(str(tuple(s)) in message for s in shapes)


PAIRED = ["mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "binary_cross_entropy_with_logits",
          "binary_cross_entropy", "kl_div", "softmax_cross_entropy_with_probs"]


@pytest.mark.parametrize("name", PAIRED)
@pytest.mark.parametrize("a_shape,b_shape", [((N, 1), (N,)), ((N,), (N, 1)), ((1, N), (N,)), ((N, C), (1, C)),
                                             ((N, C), (C, N))])
def test_input_and_target_shapes_never_broadcast(name, a_shape, b_shape):
    loss = fd.get(name)
    a, b = jnp.full(a_shape, 0.5), jnp.full(b_shape, 0.5)
    for fn in (loss, jax.jit(loss)):
        with pytest.raises(ValueError) as err:
            fn(a, b)
        msg = str(err.value)
        assert msg.startswith(name + ":"), msg
        assert _shapes_in(msg, a_shape, b_shape), msg


def test_mse_column_vs_vector_says_what_to_do():
    with pytest.raises(ValueError, match=re.escape("input shape (4, 1) and target shape (4,) differ")) as err:
        fd.mse_loss(jnp.ones((4, 1)), jnp.ones(4))
    assert "reshape" in str(err.value)


LABELLED = ["softmax_cross_entropy", "nll_loss", "multi_margin_loss"]


@pytest.mark.parametrize("name", LABELLED)
def test_label_shape_mismatch(name):
    loss = fd.get(name)
    for labels in (LABELS[:3], LABELS[:, None], jnp.zeros((N, C), jnp.int32)):
        for fn in (loss, jax.jit(loss)):
            with pytest.raises(ValueError) as err:
                fn(X, labels)
            msg = str(err.value)
            assert msg.startswith(name + ":") and _shapes_in(msg, labels.shape, X.shape), msg


@pytest.mark.parametrize("name", LABELLED)
@pytest.mark.parametrize("labels", [LABELS.astype(jnp.float32), LABELS > 0], ids=["float", "bool"])
def test_label_dtype(name, labels):
    with pytest.raises(TypeError, match=f"{name}: labels must be integer class indices, got dtype"):
        fd.get(name)(X, labels)
    with pytest.raises(TypeError, match="integer"):
        jax.jit(fd.get(name))(X, labels)


@pytest.mark.parametrize("name", LABELLED)
@pytest.mark.parametrize("bad", [3, -1, 1000])
def test_labels_out_of_range_outside_jit(name, bad):
    with pytest.raises(ValueError, match=f"{name}: label {bad} is out of range for 3 classes \\(valid: 0..2"):
        fd.get(name)(X, LABELS.at[2].set(bad))


def test_ignore_index_is_not_out_of_range_but_other_negatives_are():
    assert jnp.isfinite(fd.softmax_cross_entropy(X, LABELS.at[0].set(-100)))
    assert jnp.isfinite(fd.nll_loss(X, LABELS.at[0].set(-100)))
    with pytest.raises(ValueError, match="or ignore_index=-100"):
        fd.nll_loss(X, LABELS.at[0].set(-5))
    with pytest.raises(ValueError, match="out of range"):
        fd.multi_margin_loss(X, LABELS.at[0].set(-100))     # torch's multi_margin has no ignore_index


@pytest.mark.parametrize("name", ["softmax_cross_entropy", "nll_loss", "multi_margin_loss",
                                  "softmax_cross_entropy_with_probs"])
@pytest.mark.parametrize("w_shape", [(C + 1,), (1, C), (N,)])
def test_class_weight_shape(name, w_shape):
    target = jax.nn.softmax(X) if name == "softmax_cross_entropy_with_probs" else LABELS
    with pytest.raises(ValueError, match=f"{name}: class weight shape {re.escape(str(w_shape))} must be \\(3,\\)"):
        fd.get(name)(X, target, jnp.ones(w_shape))


@pytest.mark.parametrize("arg", ["weight", "pos_weight"])
def test_bce_weights_broadcast_to_the_input_only(arg):
    x = jnp.zeros((N, C))
    ok = {arg: jnp.ones((C,))}
    assert fd.binary_cross_entropy_with_logits(x, x, **ok).shape == ()
    for shape in [(N,), (2, N, C), (C + 1,)]:
        with pytest.raises(ValueError, match=f"{arg} shape {re.escape(str(shape))} does not broadcast to the "
                                             f"input shape \\(4, 3\\)"):
            fd.binary_cross_entropy_with_logits(x, x, **{arg: jnp.ones(shape)})


@pytest.mark.parametrize("name", PAIRED)
def test_integer_inputs_are_refused(name):
    ints = jnp.ones((N, C), jnp.int32)
    with pytest.raises(TypeError, match=f"{name}: .* must be a floating-point array, got dtype int32"):
        fd.get(name)(ints, ints)


@pytest.mark.parametrize("name", PAIRED + LABELLED)
def test_unknown_reduction(name):
    target = LABELS if name in LABELLED else jnp.full((N, C), 0.5)
    with pytest.raises(ValueError, match=f"{name}: unknown reduction 'avg'; valid: mean, sum, none"):
        fd.get(name)(jnp.full((N, C), 0.5), target, reduction="avg")


def test_settings_out_of_range():
    with pytest.raises(ValueError, match="softmax_cross_entropy: label_smoothing must lie in \\[0, 1\\], got 1.5"):
        fd.softmax_cross_entropy(X, LABELS, label_smoothing=1.5)
    with pytest.raises(ValueError, match="smooth_l1_loss: beta must be >= 0"):
        fd.smooth_l1_loss(X, X, beta=-1.0)
    with pytest.raises(ValueError, match="binary_cross_entropy: input probabilities must lie in \\[0, 1\\]"):
        fd.binary_cross_entropy(X * 2, X)
    with pytest.raises(ValueError, match="kl_div: reduction='batchmean' needs a batch axis"):
        fd.kl_div(jnp.array(0.5), jnp.array(0.5), reduction="batchmean")


def test_logits_without_class_axis():
    for name in LABELLED:
        with pytest.raises(ValueError, match=f"{name}: .*class axis"):
            fd.get(name)(jnp.array(1.0), jnp.array(0))


# ----------------------------------------------------------------------------------------- dense, dropout
def test_dense_shape_errors_name_both_shapes():
    x, w, b = jnp.ones((5, 6)), jnp.ones((6, 3)), jnp.ones(3)
    with pytest.raises(ValueError, match=re.escape("dense: input shape (5, 7) does not match weight shape (6, 3)")):
        fd.dense(jnp.ones((5, 7)), w, b)
    with pytest.raises(ValueError, match=re.escape("dense: input shape (5, 3) does not match weight shape (6, 3)")):
        jax.jit(fd.dense)(jnp.ones((5, 3)), w, b)      # a torch-layout (out, in) weight is caught, also in jit
    with pytest.raises(ValueError, match=re.escape("dense: bias shape (1, 3) must be (3,)")):
        fd.dense(x, w, jnp.ones((1, 3)))                 # would broadcast fine, but it is not a bias
    with pytest.raises(ValueError, match=re.escape("dense: weight must be 2-D (n_in, n_out), got shape (6, 3, 1)")):
        fd.dense(x, jnp.ones((6, 3, 1)), b)


def test_dropout_errors():
    with pytest.raises(ValueError, match="dropout: rate is the probability of dropping and must lie in \\[0, 1\\]"):
        fd.dropout(X, jax.random.PRNGKey(0), rate=1.5)
    with pytest.raises(ValueError, match="dropout: training with rate > 0 needs a PRNG key"):
        fd.dropout(X, None, rate=0.5)
    assert jnp.array_equal(fd.dropout(X, None, rate=0.5, train=False), X)


def test_wrong_arguments_to_a_primitive():
    with pytest.raises(TypeError, match="mse_loss\\(\\) got an unexpected argument 'delta'"):
        fd.mse_loss(X, X, delta=1.0)
    with pytest.raises(TypeError, match="settings are keyword-only"):
        fd.mse_loss(X, X, "sum")


# every dropout follows one rule (funcdl/nn/_dropout.py): rate in [0, 1], as torch; rate 1 drops everything
DROPOUTS = {
    "dropout": lambda x, key, rate: fd.dropout(x, key, rate=rate),
    "spatial_dropout": lambda x, key, rate: fd.spatial_dropout(x, key, rate=rate),
    "dot_product_attention": lambda x, key, rate: fd.dot_product_attention(x, x, x, None, None, key,
                                                                           dropout_rate=rate),
}


@pytest.mark.parametrize("name", sorted(DROPOUTS))
def test_one_dropout_rule(name):
    apply = DROPOUTS[name]
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 4, 5))
    key = jax.random.PRNGKey(0)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"{name}: .*must lie in \\[0, 1\\], got {bad}"):
            apply(x, key, bad)
    with pytest.raises(ValueError, match=f"{name}: training with .* > 0 needs a PRNG key"):
        apply(x, None, 0.5)
    # rate 1: every unit dropped, zeros out and zero gradient (torch: F.dropout(x, 1.0) is zeros), no key needed
    for k in (key, None):
        y, pull = jax.vjp(lambda a, k=k: apply(a, k, 1.0), x)
        assert jnp.array_equal(y, jnp.zeros_like(y))
        assert jnp.array_equal(pull(jnp.ones_like(y))[0], jnp.zeros_like(x))
    # rate 0: the identity (attention: its plain value)
    assert jnp.allclose(apply(x, None, 0.0), apply(x, key, 0.0))
