"""Export a model's forward for deployment: StableHLO through ``jax.export`` and ONNX through ``jax2onnx``.

What is exported is an *inference function*: the parameters (and batch-norm statistics) closed over as constants,
evaluation mode (no dropout, running statistics), inputs in, logits out:

* a classifier (MLP, CNN, ResNet, ...): ``x (B, *input_shape) float32 -> logits (B, classes)``;
* a GPT: ``tokens (B, T) int32 -> logits (B, T, vocab)`` with ``T <= block_size``.

``B`` (and the GPT's ``T``) are symbolic: one file serves every batch size. Everything is exported in float32:
the parameters are cast to float32 and a model's ``compute_dtype`` (the GPT's bfloat16 matrix products by
default) is replaced by float32, so the export equals funcdl's float32 forward to rounding.

* :func:`to_stablehlo` writes ``jax.export``'s serialised bytes (``FILE``) and a small JSON of the input specs
  (``FILE.json``). The bytes reload with JAX alone, without funcdl::

      from jax import export
      exp = export.deserialize(open("mlp.stablehlo", "rb").read())
      logits = exp.call(x)            # any batch size; a GPT: any T <= block_size

  :func:`load_stablehlo` does the same and checks the inputs against the specs first (one-line errors).
* :func:`to_onnx` writes an ONNX model (and ``FILE.json``) through jax2onnx, which inlines the forward of every
  ``custom_vjp`` (funcdl's hand-derived gradients play no part in inference). The batch and the GPT's sequence
  length are dynamic axes (``tokens (B, T)``, ``T <= block_size``, as in StableHLO): the forward is traced with
  a symbolic ``T`` bounded by the block size, so the causal mask (an iota over ``T``) and the positions (the
  first ``T`` rows of ``wpe``, a slice of symbolic size) become ONNX ops over the input's runtime shape.
  ``seq_len`` fixes ``T`` instead (a static shape, for runtimes that want one). :func:`load_onnx` runs it with
  onnxruntime on the CPU and rejects ``T > block_size`` in one line (the position table has block_size rows).

TensorRT (needs an NVIDIA GPU; not run here): the ONNX file goes through TensorRT's ONNX parser with ``trtexec``.
Export with an opset TensorRT parses (``--opset 17``; jax2onnx's default, 23, is newer than most TensorRT
releases read) and give the ranges of the dynamic ``B`` (and a GPT's ``T``, at most its block size; the input
names are ``x`` and ``tokens``)::

    funcdl export runs/lenet --format onnx --opset 17 --out lenet.onnx
    trtexec --onnx=lenet.onnx --minShapes=x:1x28x28x1 --optShapes=x:256x28x28x1 --maxShapes=x:1024x28x28x1 \
            --saveEngine=lenet.plan            # add --fp16 for half-precision kernels
    funcdl export runs/gpt --format onnx --opset 17 --out gpt.onnx
    trtexec --onnx=gpt.onnx --minShapes=tokens:1x1 --optShapes=tokens:16x64 --maxShapes=tokens:64x64

Int8 weights: ``inference(..., weights="int8")`` stores every matrix and kernel (arrays of two or more
dimensions) as int8 with one float32 scale per output channel (symmetric, ``w ~ q * s``, ``s = max|w| / 127``
over all axes but the last) and dequantizes them inside the graph (``q.astype(f32) * s``); both formats carry
the int8 tensors, a quarter of the float32 size.

``funcdl`` itself never imports ``models``: these functions take a ``Task`` (``funcdl.training.task``) and its
params, or a run as ``funcdl.commands.train.load_run`` returns it; ``funcdl export RUN`` loads the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["Input", "Inference", "inference", "quantize_int8", "to_stablehlo", "load_stablehlo", "to_onnx",
           "load_onnx", "example_inputs", "FORMATS"]

FORMATS = ("stablehlo", "onnx")
INSTALL_HINT = 'pip install -e ".[export]"'


class Input(NamedTuple):
    """One input of an exported function: ``shape`` holds ints and the names of symbolic dimensions ("B")."""
    name: str
    shape: tuple
    dtype: str = "float32"


class Inference(NamedTuple):
    """A function to export: ``fn(*inputs) -> output``, its inputs, upper bounds of symbolic dimensions
    (``{"T": block_size}``) and what it came from (``model``, ``weights``)."""
    fn: Callable
    inputs: tuple
    bounds: dict
    model: str = "function"
    weights: str = "float32"


# -- the inference function of a model ------------------------------------------------------------------------------


def _float32(tree):
    """Every floating leaf of ``tree`` as a float32 numpy array (integer leaves unchanged)."""
    def cast(a):
        a = np.asarray(a)
        return a.astype(np.float32) if np.issubdtype(a.dtype, np.floating) else a
    return jax.tree.map(cast, tree)


def quantize_int8(params):
    """``(q, scales)``: every floating array of two or more dimensions as symmetric int8 with one float32 scale per
    output channel (the last axis): ``s = max|w| / 127`` over the other axes, ``q = round(w / s)`` in
    [-127, 127]. Vectors (biases, norm scales) stay float32 with a scale of None."""
    def one(a):
        a = np.asarray(a)
        if a.ndim < 2 or not np.issubdtype(a.dtype, np.floating):
            return a, None
        s = np.abs(a).max(axis=tuple(range(a.ndim - 1)), keepdims=True).astype(np.float32) / 127.0
        s = np.where(s > 0, s, np.float32(1.0)).astype(np.float32)
        return np.clip(np.rint(a / s), -127, 127).astype(np.int8), s

    pairs = jax.tree.map(one, params)
    is_pair = lambda p: isinstance(p, tuple)  # noqa: E731
    return (jax.tree.map(lambda p: p[0], pairs, is_leaf=is_pair),
            jax.tree.map(lambda p: p[1], pairs, is_leaf=is_pair))


def _dequantize(q, scales):
    return jax.tree.map(lambda a, s: a if s is None else jnp.asarray(a).astype(jnp.float32) * s, q, scales,
                        is_leaf=lambda x: x is None)


def inference(task, params, state=None, info=None, *, name: str | None = None, weights: str = "float32"):
    """The :class:`Inference` of a trained model: ``task`` a ``funcdl.training.task.Task`` of one model (its
    ``extras`` hold ``model`` and ``config``, as ``models.as_task`` makes them), ``info`` its DataInfo (a
    classifier's input shape; a GPT needs none). ``weights``: "float32" or "int8" (see the module docstring).
    Raises ValueError (one line) for a model that is not a classifier or a GPT."""
    extras = task.extras or {}
    model, config = extras.get("model"), extras.get("config")
    name = name or (getattr(model, "__name__", "model").rsplit(".", 1)[-1])
    if weights not in ("float32", "int8"):
        raise ValueError(f"weights must be 'float32' or 'int8', got {weights!r}")
    if task.players or model is None or config is None or not hasattr(model, "apply"):
        raise ValueError(f"model {name!r} cannot export: export covers one-network classifiers (MLP, CNNs) and GPT "
                         "language models (this one has several players or no apply function)")
    if getattr(config, "compute_dtype", None) is not None:
        config = dataclasses.replace(config, compute_dtype=None)      # float32 matrix products
    params, state = _float32(params), _float32(state if state is not None else {})
    if task.kind == "language" and hasattr(config, "block_size"):
        inputs, bounds = (Input("tokens", ("B", "T"), "int32"),), {"T": int(config.block_size)}
        want = lambda b, t: (b, t, config.vocab_size)  # noqa: E731
    elif task.kind == "classification" and info is not None and info.num_classes:
        tokens = info.vocab_size is not None                  # a text classifier takes token ids
        inputs = (Input("tokens", ("B", *info.input_shape), "int32") if tokens
                  else Input("x", ("B", *info.input_shape), "float32"),)
        bounds, want = {}, lambda b, t: (b, info.num_classes)  # noqa: E731
    else:
        raise ValueError(f"model {name!r} cannot export: export covers classifiers (an input batch -> logits over "
                         f"the classes) and GPT language models (tokens -> next-token logits); this is a "
                         f"{task.kind} model{'' if info is None or info.num_classes else ' without classes'}")
    if weights == "int8":
        q, scales = quantize_int8(params)

        def fn(x):
            return model.apply(_dequantize(q, scales), state, x, config)[0]
    else:
        def fn(x):
            return model.apply(params, state, x, config)[0]
    inf = Inference(fn, inputs, bounds, name, weights)
    b, t = 3, min(bounds.get("T", 1), 5)
    with jax.enable_x64(False):
        out = jax.eval_shape(fn, *example_inputs(inf, {"B": b, "T": t}, abstract=True))
    if tuple(out.shape) != want(b, t):
        raise ValueError(f"model {name!r} cannot export: its forward returns shape {tuple(out.shape)}, not the "
                         f"logits {want(b, t)} export expects")
    return inf


def example_inputs(inf: Inference, sizes: dict, *, key=None, abstract: bool = False):
    """Arrays for ``inf``'s inputs with the symbolic dimensions set by ``sizes`` (``{"B": 7, "T": 5}``): standard
    normal floats, uniform token ids below the vocabulary (``vocab``, default 2), or ShapeDtypeStructs."""
    key = jax.random.PRNGKey(0) if key is None else key
    out = []
    for i, spec in enumerate(inf.inputs):
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)
        if abstract:
            out.append(jax.ShapeDtypeStruct(shape, spec.dtype))
        elif spec.dtype.startswith("int"):
            out.append(np.asarray(jax.random.randint(jax.random.fold_in(key, i), shape, 0, sizes.get("vocab", 2)),
                                  spec.dtype))
        else:
            out.append(np.asarray(jax.random.normal(jax.random.fold_in(key, i), shape), spec.dtype))
    return out


def _resolve(obj, inputs=None, bounds=None) -> Inference:
    """An :class:`Inference` from one, from a run dict (``task``, ``params``, ``state``, ``info``, as
    ``funcdl.commands.train.load_run`` returns it) or from a plain function plus ``inputs``."""
    if isinstance(obj, Inference):
        return obj
    if isinstance(obj, dict) and "task" in obj:
        model = (obj.get("config") or {}).get("model")
        return inference(obj["task"], obj["params"], obj.get("state"), obj.get("info"), name=model)
    if callable(obj):
        if not inputs:
            raise TypeError("exporting a plain function needs inputs=[Input(name, shape, dtype), ...] (shape: ints "
                            "and names of symbolic dimensions such as 'B')")
        specs = tuple(s if isinstance(s, Input) else Input(f"x{i}", tuple(s[0]), str(s[1]))
                      for i, s in enumerate(inputs))
        return Inference(obj, specs, dict(bounds or {}), getattr(obj, "__name__", "function"))
    raise TypeError(f"cannot export a {type(obj).__name__}: give an Inference, a loaded run or a function with "
                    "inputs=")


# -- files ------------------------------------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _target(out) -> Path:
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; name the file to write (e.g. {out / 'model'}.onnx)")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    return out


def _spec_json(inf: Inference, fmt: str, shapes, **more) -> dict:
    return {"format": fmt, "model": inf.model, "weights": inf.weights, "dtype": "float32",
            "inputs": [{"name": s.name, "shape": list(shape), "dtype": s.dtype}
                       for s, shape in zip(inf.inputs, shapes, strict=True)],
            "bounds": inf.bounds, **more}


def _write(out: Path, data: bytes, spec: dict) -> Path:
    _write_atomic(out, data)
    _write_atomic(out.with_name(out.name + ".json"), (json.dumps(spec, indent=2) + "\n").encode())
    return out


def read_spec(path) -> dict:
    """The input specs written next to an export (``FILE.json``)."""
    side = Path(str(path) + ".json")
    if not side.is_file():
        raise FileNotFoundError(f"{side} is missing: an export is the file plus its FILE.json of input specs")
    return json.loads(side.read_text())


def _check_inputs(spec: dict, arrays) -> None:
    """One-line ValueError when ``arrays`` do not fit the export's input specs."""
    specs = spec["inputs"]
    if len(arrays) != len(specs):
        raise ValueError(f"the export takes {len(specs)} input(s) ({', '.join(s['name'] for s in specs)}), got "
                         f"{len(arrays)}")
    bounds = spec.get("bounds", {})
    for s, a in zip(specs, arrays, strict=True):
        shape = tuple(np.shape(a))
        ok = len(shape) == len(s["shape"]) and all(
            n <= bounds.get(d, n) if isinstance(d, str) else d == n for d, n in zip(s["shape"], shape, strict=True))
        if not ok:
            limits = "".join(f", {d} <= {m}" for d, m in bounds.items())
            raise ValueError(f"input {s['name']!r} has shape {shape}; the export takes {tuple(s['shape'])}{limits}")


class Loaded(NamedTuple):
    """A reloaded export: call it with the inputs (numpy or JAX arrays) to get the output as a numpy array."""
    run: Callable
    spec: dict
    handle: Any         # the jax.export.Exported, or the onnxruntime InferenceSession

    def __call__(self, *arrays):
        _check_inputs(self.spec, arrays)
        return self.run(*arrays)


# -- StableHLO ---------------------------------------------------------------------------------------------------------


def _exported(inf: Inference):
    from jax import export

    scope = export.SymbolicScope([f"{d} <= {m}" for d, m in inf.bounds.items()])
    avals = [jax.ShapeDtypeStruct(export.symbolic_shape(", ".join(str(d) for d in s.shape), scope=scope), s.dtype)
             for s in inf.inputs]
    with jax.enable_x64(False):
        return export.export(jax.jit(inf.fn))(*avals)


def to_stablehlo(obj, out, *, inputs=None, bounds=None) -> Path:
    """Serialise the forward of ``obj`` (an :class:`Inference`, a loaded run, or a function with ``inputs``) with
    ``jax.export`` to ``out`` (symbolic batch and sequence dimensions) and its input specs to ``out + '.json'``."""
    out = _target(out)
    inf = _resolve(obj, inputs, bounds)
    exp = _exported(inf)
    shapes = [s.shape for s in inf.inputs]
    return _write(out, bytes(exp.serialize()), _spec_json(inf, "stablehlo", shapes, jax_version=jax.__version__,
                                                          platforms=list(exp.platforms)))


def load_stablehlo(path) -> Loaded:
    """Reload a StableHLO export: ``load_stablehlo("mlp.stablehlo")(x)`` -> logits (numpy)."""
    from jax import export

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no StableHLO export at {path}")
    spec = read_spec(path)
    if spec.get("format") != "stablehlo":
        raise ValueError(f"{path} is a {spec.get('format')!r} export, not StableHLO")
    exp = export.deserialize(bytearray(path.read_bytes()))

    def run(*arrays):
        with jax.enable_x64(False):
            return np.asarray(exp.call(*[jnp.asarray(a) for a in arrays]))
    return Loaded(run, spec, exp)


# -- ONNX --------------------------------------------------------------------------------------------------------------


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeError(f"ONNX export needs {module}, which is not installed: {INSTALL_HINT}") from None


def _pad_concat(x, value, config):
    """``lax.pad`` without interior padding, as slices and concatenations of one-wide blocks of ``value``."""
    for ax, (lo, hi, _) in enumerate(config):
        if lo < 0:
            x, lo = lax.slice_in_dim(x, -lo, x.shape[ax], axis=ax), 0
        if hi < 0:
            x, hi = lax.slice_in_dim(x, 0, x.shape[ax] + hi, axis=ax), 0
        if lo or hi:
            block = jnp.full_like(lax.slice_in_dim(x, 0, 1, axis=ax), value)
            x = jnp.concatenate([block] * lo + [x] + [block] * hi, axis=ax)
    return x


def _forward_scan(eqn, ins):
    """A ``reverse=True`` scan as a forward scan over the flipped sequences, its stacked outputs flipped back
    (jax2onnx 0.17 converts forward scans only; the backward half of a bidirectional RNN scans in reverse)."""
    p = eqn.params
    split = p["num_consts"] + p["num_carry"]
    xs = [lax.rev(x, (0,)) for x in ins[split:]]
    outs = eqn.primitive.bind(*ins[:split], *xs, **dict(p, reverse=False))
    k = p["num_carry"]
    return [*outs[:k], *(lax.rev(y, (0,)) for y in outs[k:])]


def _onnx_friendly(closed):
    """The function a closed jaxpr computes, re-emitted for jax2onnx 0.17: calls of ``custom_vjp`` /
    ``custom_jvp`` functions and nested jits are inlined (their forward; inference needs no derivative), and
    ``lax.pad`` becomes concatenation (jax2onnx's pad needs a constant batch size), a reverse scan a forward one
    over flipped sequences (jax2onnx has forward scans only). Handing jax2onnx a jaxpr of lax
    primitives also avoids its patched jax.numpy functions, which mistype some calls (``jnp.maximum(x32, 0)``
    traced as float64, so every ReLU net failed)."""
    from jax.extend.core import Literal

    def run(jaxpr, consts, *args):
        env = {}
        read = lambda v: v.val if isinstance(v, Literal) else env[v]  # noqa: E731
        env.update(zip(jaxpr.constvars, consts, strict=True))
        env.update(zip(jaxpr.invars, args, strict=True))
        for eqn in jaxpr.eqns:
            ins, name = [read(v) for v in eqn.invars], eqn.primitive.name
            inner = eqn.params.get("call_jaxpr", eqn.params.get("jaxpr"))
            if name in ("custom_vjp_call", "custom_jvp_call", "pjit", "jit", "closed_call") and inner is not None:
                outs = run(inner.jaxpr, inner.consts, *ins)
            elif name == "scan" and eqn.params.get("reverse"):
                outs = _forward_scan(eqn, ins)
            elif name == "pad" and all(i == 0 for _, _, i in eqn.params["padding_config"]):
                outs = [_pad_concat(ins[0], ins[1], eqn.params["padding_config"])]
            else:
                bind = eqn.primitive.get_bind_params(eqn.params)      # older JAX: (subfuns, params)
                subfuns, params = bind if isinstance(bind, tuple) else ((), bind)
                outs = eqn.primitive.bind(*subfuns, *ins, **params)
                outs = outs if eqn.primitive.multiple_results else [outs]
            env.update(zip(eqn.outvars, outs, strict=True))
        return [read(v) for v in jaxpr.outvars]

    def fn(*args):
        outs = run(closed.jaxpr, closed.consts, *args)
        return outs[0] if len(outs) == 1 else tuple(outs)
    return fn


def _jax_plugins_only(undo: bool = False) -> bool:
    """Let jax2onnx load its plugins for JAX primitives only. On its first conversion it imports every plugin
    module, and the Flax / Equinox examples among them build and compile models at import (20 s of a 2-core
    machine); what :func:`to_onnx` hands it is a jaxpr of lax primitives, which the ``jax`` plugins cover.
    ``undo=True`` lets the next conversion load them all (returns whether it changed anything). Private
    jax2onnx API, used only when present."""
    try:
        from jax2onnx.plugins import plugin_system as ps
    except ImportError:
        return False
    if not (hasattr(ps, "_import_tree") and hasattr(ps, "_already_imported_plugins")):
        return False
    if undo:
        changed = getattr(ps, "_funcdl_jax_only", False)
        ps._already_imported_plugins = ps._funcdl_jax_only = False
        return changed
    if not ps._already_imported_plugins:
        ps._import_tree(Path(ps.__file__).parent / "jax", "jax2onnx.plugins.jax")
        ps._already_imported_plugins = ps._funcdl_jax_only = True
    return True


@contextlib.contextmanager
def _float32_tracing():
    """jax_enable_x64 off for the trace, globally: jax2onnx reads the global flag (not the context's) and traces
    with it, so a process with float64 on (the test suite) would otherwise get float64 intermediates."""
    before = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def to_onnx(obj, out, *, inputs=None, bounds=None, seq_len: int | None = None, opset: int | None = None) -> Path:
    """Convert the forward of ``obj`` to ONNX with jax2onnx into ``out`` (and ``out + '.json'``). The batch and a
    bounded dimension (the GPT's ``T <= block_size``) stay dynamic axes; ``seq_len`` fixes the bounded one."""
    jax2onnx = _need("jax2onnx")
    _jax_plugins_only()
    from jax import export

    out = _target(out)
    inf = _resolve(obj, inputs, bounds)
    fixed = {}
    if seq_len is not None:
        for d, m in inf.bounds.items():
            if not 1 <= int(seq_len) <= m:
                raise ValueError(f"--seq-len must lie in 1 .. {m} (the model's {d} bound), got {seq_len}")
            fixed[d] = int(seq_len)
    shapes = [tuple(fixed.get(d, d) for d in s.shape) for s in inf.inputs]
    bounds = {d: m for d, m in inf.bounds.items() if d not in fixed}
    # the bound lets the forward's own checks (a GPT's T <= block_size) decide on a symbolic T
    scope = export.SymbolicScope([f"{d} <= {m}" for d, m in bounds.items()])
    avals = [jax.ShapeDtypeStruct(export.symbolic_shape(", ".join(map(str, shape)), scope=scope), s.dtype)
             for s, shape in zip(inf.inputs, shapes, strict=True)]
    kw = {} if opset is None else {"opset": int(opset)}
    with _float32_tracing():
        # trace with JAX first and hand jax2onnx the rewritten jaxpr (see _onnx_friendly)
        fn = _onnx_friendly(jax.make_jaxpr(inf.fn)(*avals))
        convert = functools.partial(jax2onnx.to_onnx, fn, avals, model_name=inf.model, output_names=["logits"],
                                    input_names=[s.name for s in inf.inputs], **kw)
        try:
            proto = convert()
        except Exception:           # a primitive outside jax2onnx's jax plugins: load them all and try again
            if not _jax_plugins_only(undo=True):
                raise
            proto = convert()
    opset_used = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=None)
    spec = _spec_json(inf, "onnx", shapes, opset=opset_used, jax2onnx=getattr(jax2onnx, "__version__", None))
    spec["bounds"] = bounds
    return _write(out, proto.SerializeToString(), spec)


def load_onnx(path, *, threads: int | None = None) -> Loaded:
    """Open an ONNX export with onnxruntime on the CPU: ``load_onnx("mlp.onnx")(x)`` -> logits (numpy)."""
    ort = _need("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    spec = read_spec(path)
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def run(*arrays):
        feed = {n: np.asarray(a, s["dtype"]) for n, a, s in zip(names, arrays, spec["inputs"], strict=True)}
        return sess.run(None, feed)[0]
    return Loaded(run, spec, sess)
