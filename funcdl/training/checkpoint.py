"""Checkpoints: pytrees of arrays plus JSON metadata in one ``.npz`` file, written atomically.

A checkpoint stores the leaves of a dict of pytrees (``{"params": ..., "opt_state": ..., "state": ...}``)
under their tree paths (``params['layers'][0]['w']``) and a JSON ``meta`` record (step, PRNG key, data
position, config). It stores no pickled code: to restore, pass a *template* tree of the same structure (a
freshly initialised model and optimizer state) and the leaves are put back into it, path by path, with a
clear error when a path or a shape does not match.

Writes go to ``NAME.tmp-<pid>`` and are renamed over ``NAME`` with ``os.replace`` (atomic on POSIX), so a
crash or Ctrl-C mid-write never leaves a damaged checkpoint behind.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import jax
import numpy as np

__all__ = ["CorruptCheckpoint", "save", "load_meta", "load_arrays", "restore", "load_matching", "flatten", "tree_paths"]

_META = "__meta__"


def _is_none(x):
    return x is None


def flatten(tree) -> dict:
    """``{path string: numpy array}`` for every array leaf (``None`` leaves are skipped)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_none)[0]
    out = {}
    for path, leaf in leaves:
        if leaf is None:
            continue
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def tree_paths(tree) -> list[str]:
    return list(flatten(tree))


def save(path, trees: dict, meta: dict | None = None) -> Path:
    """Write ``trees`` (name -> pytree) and ``meta`` (JSON-serialisable) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, tree in trees.items():
        for p, a in flatten(tree).items():
            arrays[f"{name}/{p}"] = a
    meta_json = json.dumps(meta or {}, sort_keys=True)
    arrays[_META] = np.frombuffer(meta_json.encode("utf-8"), np.uint8)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _open(path):
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


class CorruptCheckpoint(ValueError):
    """A checkpoint file that cannot be read back (truncated, overwritten, not a checkpoint)."""


def load_arrays(path) -> tuple[dict, dict]:
    """``(arrays by 'name/path', meta)`` of a checkpoint file (or of ``DIR/checkpoint.npz``).

    A file that is not a readable checkpoint raises :class:`CorruptCheckpoint` (a ``ValueError``) naming it.
    """
    path = _open(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8")) if _META in arrays else {}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError, UnicodeDecodeError) as err:
        raise CorruptCheckpoint(f"checkpoint {path} is damaged or not a funcdl checkpoint "
                                f"({type(err).__name__}: {err}); delete it, or train again without --resume") \
            from None
    return arrays, meta


def load_meta(path) -> dict:
    return load_arrays(path)[1]


def restore(path, templates: dict) -> tuple[dict, dict]:
    """Put a checkpoint's leaves back into ``templates`` (name -> pytree of the same structure).

    Returns ``(trees, meta)``. Raises ValueError naming the first path whose presence, shape or dtype differs.
    """
    arrays, meta = load_arrays(path)
    out = {}
    for name, template in templates.items():
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template, is_leaf=_is_none)
        new = []
        for p, leaf in leaves:
            if leaf is None:
                new.append(None)
                continue
            key = f"{name}/{jax.tree_util.keystr(p)}"
            if key not in arrays:
                raise ValueError(f"checkpoint {path} has no entry {key}; it was written for another model, "
                                 "optimizer or configuration")
            a = arrays[key]
            is_key = isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
            ref = jax.random.key_data(leaf) if is_key else leaf
            if a.shape != np.shape(ref):
                raise ValueError(f"checkpoint {path}: {key} has shape {a.shape}, the model expects {np.shape(ref)}")
            value = jax.numpy.asarray(a, dtype=np.asarray(ref).dtype if not is_key else a.dtype)
            new.append(jax.random.wrap_key_data(value) if is_key else value)
        out[name] = jax.tree_util.tree_unflatten(treedef, new)
    return out, meta


def load_matching(path, params, name: str = "params", pattern: str | None = None,
                  exclude: str | None = None) -> tuple[object, list, list]:
    """Copy into ``params`` every leaf of the checkpoint's ``name`` tree whose path and shape match.

    For transfer learning (``--init-from``): a classifier head of another size keeps its fresh initialisation,
    and so does every leaf whose path (``out/w``, as ``--freeze`` writes it) matches ``exclude`` (a new head of
    the same size). ``pattern`` (a regex on the same paths) restricts what is copied.
    Returns ``(params, copied paths, skipped paths)``.
    """
    from funcdl.optim import path_str

    arrays, _ = load_arrays(path)
    regex = re.compile(pattern) if pattern else None
    no = re.compile(exclude) if exclude else None
    copied, skipped = [], []

    def pick(p, leaf):
        if leaf is None:
            return None
        key = jax.tree_util.keystr(p)
        a = arrays.get(f"{name}/{key}")
        slash = path_str(p)
        if (a is None or a.shape != np.shape(leaf) or (regex is not None and not regex.search(slash))
                or (no is not None and no.search(slash))):
            skipped.append(key)
            return leaf
        copied.append(key)
        return jax.numpy.asarray(a, dtype=leaf.dtype)

    new = jax.tree_util.tree_map_with_path(pick, params, is_leaf=_is_none)
    return new, copied, skipped
