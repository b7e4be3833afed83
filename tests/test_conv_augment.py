"""Augmentation: pure functions of the key, shapes kept, the mixing rules and their loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from funcdl.training import augment as A


def _images(n=6, h=10, w=12, c=2):
    return jnp.asarray(np.random.default_rng(0).normal(size=(n, h, w, c)), jnp.float32)


def test_same_key_same_batch_and_shapes():
    x = _images()
    key = jax.random.PRNGKey(3)
    for fn in (lambda k, x: A.random_crop(k, x, 3), A.hflip, A.translate, lambda k, x: A.cutout(k, x, 4)):
        a, b = fn(key, x), jax.jit(fn)(key, x)
        assert a.shape == x.shape
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(fn(jax.random.PRNGKey(4), x), a) or fn is A.hflip


def test_crop_is_a_shifted_window_and_flip_mirrors():
    x = _images(n=1)
    y = A.random_crop(jax.random.PRNGKey(0), x, 2)
    xp = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    assert any(np.array_equal(y[0], xp[0, i:i + 10, j:j + 12]) for i in range(5) for j in range(5))
    f = A.hflip(jax.random.PRNGKey(0), x, p=1.0)
    np.testing.assert_array_equal(f, x[:, :, ::-1])


def test_edge_fill_repeats_the_border_pixels():
    x = _images(n=1)
    y = A.translate(jax.random.PRNGKey(0), x, 2, fill="edge")
    xp = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    assert any(np.array_equal(y[0], xp[0, i:i + 10, j:j + 12]) for i in range(5) for j in range(5))
    assert not np.array_equal(y, A.translate(jax.random.PRNGKey(0), x, 2))   # a real shift: zero fill differs
    z = A.make_augment("crop_edge=2", None)(jax.random.PRNGKey(0), {"x": x, "y": None})["x"]
    np.testing.assert_array_equal(z, A.random_crop(jax.random.fold_in(jax.random.PRNGKey(0), 0), x, 2, fill="edge"))
    with pytest.raises(ValueError, match="fill must be one of zero, edge"):
        A.random_crop(jax.random.PRNGKey(0), x, 2, fill="reflect")


def test_cutout_zeros_one_square():
    x = jnp.ones((4, 16, 16, 1))
    y = A.cutout(jax.random.PRNGKey(1), x, 4)
    zeros = np.asarray(jnp.sum(y == 0, axis=(1, 2, 3)))
    assert np.all(zeros <= 16) and np.all(zeros >= 4)     # clipped at the border at worst to 2x2


def test_mixup_and_cutmix_targets():
    x = _images()
    y = jnp.asarray([0, 1, 2, 3, 4, 5])
    for fn in (A.mixup, A.cutmix):
        xm, q, lam = fn(jax.random.PRNGKey(5), x, y, 10)
        assert xm.shape == x.shape and q.shape == (6, 10)
        np.testing.assert_allclose(np.asarray(q).sum(-1), 1.0, rtol=1e-6)
        assert 0 <= float(lam) <= 1
        np.testing.assert_allclose(np.asarray(q)[np.arange(6), np.asarray(y)] >= float(lam) - 1e-6, True)
    logits = jax.random.normal(jax.random.PRNGKey(0), (6, 10))
    # with one-hot targets the mixed loss is the ordinary cross-entropy
    from funcdl.nn.losses import softmax_cross_entropy
    np.testing.assert_allclose(A.mixed_cross_entropy(logits, jax.nn.one_hot(y, 10)), softmax_cross_entropy(logits, y),
                               rtol=1e-6)


def test_make_augment_runs_steps_in_order_and_mixes_labels_last():
    from funcdl.training.augment import make_augment

    x = jnp.arange(2 * 6 * 6, dtype=jnp.float32).reshape(2, 6, 6, 1)
    y = jnp.array([0, 2])
    aug = make_augment("translate=1+flip=1.0+mixup=0.4", num_classes=3)
    out = aug(jax.random.PRNGKey(0), {"x": x, "y": y})
    assert out["x"].shape == x.shape and out["y_probs"].shape == (2, 3)
    np.testing.assert_allclose(np.asarray(out["y_probs"]).sum(1), 1.0, rtol=1e-6)
    assert np.array_equal(np.asarray(out["y"]), [0, 2])                 # hard labels kept for accuracy
    again = aug(jax.random.PRNGKey(0), {"x": x, "y": y})
    np.testing.assert_array_equal(np.asarray(out["x"]), np.asarray(again["x"]))      # a function of the key
    flipped = make_augment("flip=1.0", None)(jax.random.PRNGKey(1), {"x": x, "y": y})["x"]
    np.testing.assert_array_equal(np.asarray(flipped), np.asarray(x[:, :, ::-1]))
    with pytest.raises(ValueError, match="unknown step 'rotate'"):
        make_augment("rotate=10", 3)
    with pytest.raises(ValueError, match="must come last"):
        make_augment("cutmix+flip", 3)
    with pytest.raises(ValueError, match="takes a number"):
        make_augment("crop=big", 3)
    with pytest.raises(ValueError, match="classification"):
        make_augment("mixup", None)
