"""Attention pictures: the attention maps of every head for a text, and positional-encoding similarity.

``attention_maps(params, tokens, config)`` runs a GPT (``models.gpt``-style params and config, passed in, so
this module never imports ``models``) and returns the weights (layers, heads, T, T) from
``dot_product_attention(..., return_weights=True)``. ``plot_attention_maps`` draws one panel per head.

``plot_positional_similarity`` compares how two positional schemes relate positions p and r:
* sinusoidal: the cosine similarity of the table rows PE[p] and PE[r];
* RoPE: <R_p q, R_r q> / |q|^2 averaged over random q — a function of r - p only (the rotations compose),
  which is why its matrix is exactly Toeplitz (constant along diagonals).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..nn import attention as A
from ..nn import layernorm, positional

__all__ = ["attention_maps", "plot_attention_maps", "positional_similarity", "plot_positional_similarity"]


def attention_maps(params, tokens, config) -> np.ndarray:
    """(n_layer, n_head, T, T) attention weights of a GPT on one sequence ``tokens`` (T,)."""
    tokens = jnp.asarray(tokens)[None]
    t = tokens.shape[1]
    if t > params["wpe"].shape[0]:
        raise ValueError(f"attention_maps: {t} tokens exceed the model's context of {params['wpe'].shape[0]}")
    x = params["wte"][tokens] + params["wpe"][:t]
    d, h = config.n_embd, config.n_head
    maps = []
    for blk in params["blocks"]:
        a = blk["attn"]
        hn = layernorm.layer_norm(x, blk["ln_1"]["w"], blk["ln_1"].get("b"))
        qkv = hn @ a["qkv"]["w"] + (a["qkv"]["b"] if "b" in a["qkv"] else 0)
        q, k, v = (A.split_heads(qkv[..., i * d:(i + 1) * d], h) for i in range(3))
        o, w = A.dot_product_attention(q, k, v, causal=True, return_weights=True)
        maps.append(np.asarray(w[0]))
        x = x + A.merge_heads(o) @ a["proj"]["w"] + (a["proj"]["b"] if "b" in a["proj"] else 0)
        m = blk["mlp"]
        hn = layernorm.layer_norm(x, blk["ln_2"]["w"], blk["ln_2"].get("b"))
        z = hn @ m["fc"]["w"] + (m["fc"]["b"] if "b" in m["fc"] else 0)
        x = x + jax.nn.gelu(z, approximate=False) @ m["proj"]["w"] + (m["proj"]["b"] if "b" in m["proj"] else 0)
    return np.stack(maps)


def plot_attention_maps(maps: np.ndarray, labels=None, path=None, title="attention weights per head"):
    """One panel per (layer, head); rows are queries, columns keys. Returns the Figure (saved when ``path``)."""
    from matplotlib.figure import Figure

    n_layer, n_head, t, _ = maps.shape
    fig = Figure(figsize=(2.4 * n_head, 2.4 * n_layer), constrained_layout=True)
    axes = fig.subplots(n_layer, n_head, squeeze=False)
    for i in range(n_layer):
        for j in range(n_head):
            ax = axes[i][j]
            ax.imshow(maps[i, j], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {i} head {j}", fontsize=8)
            if labels is not None and t <= 40:
                ax.set_xticks(range(t), labels, fontsize=5)
                ax.set_yticks(range(t), labels, fontsize=5)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.suptitle(title)
    if path is not None:
        fig.savefig(Path(path), dpi=120)
    return fig


def positional_similarity(n_positions: int = 64, d: int = 64, n_samples: int = 256, seed: int = 0):
    """(sinusoidal cosine-similarity matrix, RoPE mean normalised inner-product matrix), each (P, P)."""
    pe = np.asarray(positional.sinusoidal_table(n_positions, d))
    pe = pe / np.linalg.norm(pe, axis=1, keepdims=True)
    sin_sim = pe @ pe.T
    q = jax.random.normal(jax.random.PRNGKey(seed), (n_samples, 1, d))
    pos = jnp.arange(n_positions)
    rq = positional.rope(jnp.broadcast_to(q, (n_samples, n_positions, d)), pos)          # (N, P, d)
    rope_sim = np.asarray(jnp.mean(jnp.einsum("npd,nrd->npr", rq, rq) / jnp.sum(q * q, -1)[..., None], 0))
    return sin_sim, rope_sim


def plot_positional_similarity(n_positions: int = 64, d: int = 64, path=None):
    from matplotlib.figure import Figure

    sin_sim, rope_sim = positional_similarity(n_positions, d)
    fig = Figure(figsize=(9, 4), constrained_layout=True)
    for ax, m, name in zip(fig.subplots(1, 2), (sin_sim, rope_sim), ("sinusoidal: cos(PE[p], PE[r])",
                                                                     "RoPE: E<R_p q, R_r q> / |q|^2"), strict=True):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("position r")
        ax.set_ylabel("position p")
        fig.colorbar(im, ax=ax, shrink=0.8)
    if path is not None:
        fig.savefig(Path(path), dpi=120)
    return fig
