"""Hugging Face checkpoints of GPT-2 and BERT, in and out of funcdl's ``gpt`` and ``bert_mlm`` models.

A Hugging Face model folder holds ``config.json`` and its tensors (``model.safetensors``, a sharded
``model.safetensors.index.json``, or a PyTorch ``pytorch_model.bin``, read with torch when it is installed).
``import_hf`` reads them with the ``safetensors`` package (nothing is downloaded) and maps them into funcdl's
parameter tree; ``export_hf`` writes the reverse, a folder that ``transformers`` loads with ``from_pretrained``.

The layouts (funcdl dense weights are (in, out)):

* GPT-2 (``GPT2LMHeadModel``, ``GPT2Model``): ``Conv1D`` weights are already (in, out); ``c_attn`` packs the
  q, k, v columns head-major, exactly funcdl's fused ``qkv``; the unembedding is tied to ``wte``. funcdl's
  ``gpt`` with ``bias=true activation=gelu_tanh norm_eps=layer_norm_epsilon d_ff=n_inner``.
* BERT (``BertModel``, ``BertForMaskedLM``, ``BertForPreTraining`` without its next-sentence head): torch
  ``Linear`` weights are (out, in) and are transposed; query, key and value are concatenated into ``w_qkv``;
  funcdl's ``bert_mlm`` with ``norm=post``, the embedding norm, token types, the pooler and the MLM transform.

Every mapping is a table of ``(Hugging Face names, funcdl path, transposed)`` rows: import reads each row's
tensors (several names: concatenated along the output axis), export splits them back.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from . import bert, gpt
from .registry import get_model

__all__ = ["SUPPORTED", "import_hf", "export_hf", "read_tensors", "build_task", "data_info", "config_of"]

# architectures (config.json "architectures"[0]) -> funcdl model
SUPPORTED = {"GPT2LMHeadModel": "gpt", "GPT2Model": "gpt", "BertModel": "bert_mlm", "BertForMaskedLM": "bert_mlm",
             "BertForPreTraining": "bert_mlm"}
_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")      # GELU's tanh form, under its Hugging Face names
# tensors a checkpoint may hold that the model does not use: GPT-2's causal-mask buffers, BERT's position ids
# and its next-sentence-prediction head
_IGNORED = (".attn.bias", ".attn.masked_bias", "position_ids", "cls.seq_relationship.")


# -- reading ----------------------------------------------------------------------------------------------------


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ValueError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def _load_safetensors(path: Path) -> dict:
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="numpy") as f:
        for name in f.keys():               # noqa: SIM118 (safe_open is not a mapping)
            out[name] = np.asarray(f.get_tensor(name), np.float32)
    return out


def read_tensors(folder) -> dict:
    """``{name: float32 numpy array}`` of a model folder's tensors (safetensors, sharded, or pytorch_model.bin)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return _load_safetensors(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in _load_safetensors(folder / shard).items()}
    if (folder / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError:
            raise ValueError(f"{folder} holds pytorch_model.bin, which needs torch to read (pip install torch), "
                             "or convert it to model.safetensors") from None
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.detach().float().numpy() for k, v in state.items()}
    raise ValueError(f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


# -- configurations ---------------------------------------------------------------------------------------------


def _refuse(cfg: dict, arch: str, key: str, wanted, default) -> None:
    if cfg.get(key, default) != wanted:
        raise ValueError(f"{arch}: config.json sets {key}={cfg.get(key)!r}; funcdl maps only {key}={wanted!r}")


def _activation(cfg: dict, key: str, arch: str) -> str:
    act = cfg.get(key, "gelu_new" if key == "activation_function" else "gelu")
    if act in _TANH:
        return "gelu_tanh"
    if act == "gelu":
        return "gelu"
    raise ValueError(f"{arch}: config.json's {key}={act!r} is not supported (gelu or gelu_new / gelu_pytorch_tanh)")


def _gpt_options(cfg: dict, arch: str) -> dict:
    for key, wanted, default in (("scale_attn_weights", True, True), ("scale_attn_by_inverse_layer_idx", False, False),
                                 ("add_cross_attention", False, False), ("tie_word_embeddings", True, True)):
        _refuse(cfg, arch, key, wanted, default)
    return {"n_layer": cfg["n_layer"], "n_head": cfg["n_head"], "n_embd": cfg["n_embd"],
            "block_size": cfg["n_positions"], "dropout": 0.0, "bias": True, "compute_dtype": "float32",
            "grad_chunks": 1, "activation": _activation(cfg, "activation_function", arch),
            "norm_eps": float(cfg.get("layer_norm_epsilon", 1e-5)), "d_ff": cfg.get("n_inner")}


def _mask_id(folder: Path, vocab_size: int) -> int:
    """[MASK]'s id from the folder's vocab.txt or tokenizer.json; the last id when neither names it."""
    if (folder / "vocab.txt").is_file():
        words = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
        if "[MASK]" in words:
            return words.index("[MASK]")
    if (folder / "tokenizer.json").is_file():
        vocab = json.loads((folder / "tokenizer.json").read_text()).get("model", {}).get("vocab", {})
        if isinstance(vocab, dict) and "[MASK]" in vocab:
            return int(vocab["[MASK]"])
    return vocab_size - 1


def _bert_options(cfg: dict, arch: str, names, folder: Path) -> dict:
    for key, wanted, default in (("is_decoder", False, False), ("add_cross_attention", False, False),
                                 ("position_embedding_type", "absolute", "absolute")):
        _refuse(cfg, arch, key, wanted, default)
    return {"n_layer": cfg["num_hidden_layers"], "n_head": cfg["num_attention_heads"], "d_model": cfg["hidden_size"],
            "d_ff": cfg.get("intermediate_size"), "max_len": cfg.get("max_position_embeddings", 512), "norm": "post",
            "norm_eps": float(cfg.get("layer_norm_eps", 1e-12)), "activation": _activation(cfg, "hidden_act", arch),
            "type_vocab_size": cfg.get("type_vocab_size", 2),
            "pooler": any(n.endswith("pooler.dense.weight") for n in names),
            "mlm_head": arch != "BertModel", "mask_id": _mask_id(folder, cfg["vocab_size"])}


def data_info(model: str, options: dict, vocab_size: int):
    """The DataInfo that makes ``build(info, **options)`` give a model of ``vocab_size`` token embeddings."""
    from funcdl.training.task import DataInfo

    if model == "bert_mlm" and options.get("mask_id") is None:
        vocab_size -= 1                    # the builder adds the [MASK] id
    length = options.get("block_size") or options.get("max_len") or 1
    return DataInfo("huggingface", (int(length),), vocab_size=int(vocab_size), kind="language")


def build_task(model: str, options: dict, vocab_size: int):
    """The registered model ``model`` built with ``options`` for a vocabulary of ``vocab_size`` ids."""
    return get_model(model).build(data_info(model, options, vocab_size), **options)


def config_of(model: str, options: dict, vocab_size: int):
    return build_task(model, options, vocab_size).extras["config"]


# -- the name tables --------------------------------------------------------------------------------------------


def _gpt_table(config: gpt.Config, prefix: str) -> list:
    rows = [(("wte.weight",), ("wte",), False), (("wpe.weight",), ("wpe",), False)]
    for i in range(config.n_layer):
        h, b = f"h.{i}.", ("blocks", i)
        for hf, fd in (("ln_1", ("ln_1",)), ("ln_2", ("ln_2",)), ("attn.c_attn", ("attn", "qkv")),
                       ("attn.c_proj", ("attn", "proj")), ("mlp.c_fc", ("mlp", "fc")), ("mlp.c_proj", ("mlp", "proj"))):
            rows += [((h + hf + ".weight",), b + fd + ("w",), False), ((h + hf + ".bias",), b + fd + ("b",), False)]
    rows += [(("ln_f.weight",), ("ln_f", "w"), False), (("ln_f.bias",), ("ln_f", "b"), False)]
    return [(tuple(prefix + n for n in names), path, t) for names, path, t in rows]


def _norm_rows(hf: str, path: tuple) -> list:
    return [((hf + ".weight",), path + ("w",), False), ((hf + ".bias",), path + ("b",), False)]


def _bert_table(config: bert.Config, prefix: str) -> list:
    e = prefix + "embeddings."
    rows = [((e + "word_embeddings.weight",), ("wte",), False), ((e + "position_embeddings.weight",), ("wpe",), False)]
    if config.type_vocab_size:
        rows.append(((e + "token_type_embeddings.weight",), ("wtt",), False))
    rows += _norm_rows(e + "LayerNorm", ("ln_e",))
    for i in range(config.n_layer):
        h, b = f"{prefix}encoder.layer.{i}.", ("blocks", i)
        s = h + "attention.self."
        rows += [((s + "query.weight", s + "key.weight", s + "value.weight"), b + ("attn", "w_qkv"), True),
                 ((s + "query.bias", s + "key.bias", s + "value.bias"), b + ("attn", "b_qkv"), False),
                 ((h + "attention.output.dense.weight",), b + ("attn", "w_o"), True),
                 ((h + "attention.output.dense.bias",), b + ("attn", "b_o"), False),
                 ((h + "intermediate.dense.weight",), b + ("mlp", "w1"), True),
                 ((h + "intermediate.dense.bias",), b + ("mlp", "b1"), False),
                 ((h + "output.dense.weight",), b + ("mlp", "w2"), True),
                 ((h + "output.dense.bias",), b + ("mlp", "b2"), False)]
        rows += _norm_rows(h + "attention.output.LayerNorm", b + ("ln_1",)) + _norm_rows(h + "output.LayerNorm",
                                                                                          b + ("ln_2",))
    if config.pooler:
        rows += [((prefix + "pooler.dense.weight",), ("pooler", "w"), True),
                 ((prefix + "pooler.dense.bias",), ("pooler", "b"), False)]
    if config.mlm_head:
        t = "cls.predictions.transform."
        rows += [((t + "dense.weight",), ("mlm", "dense", "w"), True),
                 ((t + "dense.bias",), ("mlm", "dense", "b"), False), (("cls.predictions.bias",), ("mlm", "b"), False)]
        rows += _norm_rows(t + "LayerNorm", ("mlm", "ln"))
    return rows


# -- import -----------------------------------------------------------------------------------------------------


def _normalise(tensors: dict) -> dict:
    """Older checkpoints' LayerNorm gamma/beta as weight/bias; BERT's decoder bias as the prediction bias."""
    out = {}
    for name, a in tensors.items():
        if "LayerNorm." in name and name.endswith((".gamma", ".beta")):
            name = name.rsplit(".", 1)[0] + (".weight" if name.endswith(".gamma") else ".bias")
        out[name] = a
    if "cls.predictions.decoder.bias" in out and "cls.predictions.bias" not in out:
        out["cls.predictions.bias"] = out.pop("cls.predictions.decoder.bias")
    return out


def _path_key(path) -> tuple:
    return tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path)


def _get(tree, path: tuple):
    for k in path:
        tree = tree[k]
    return tree


def _hf_shape(shape: tuple, parts: int, transposed: bool) -> tuple:
    shape = (*shape[:-1], shape[-1] // parts)
    return shape[::-1] if transposed else shape


def _fill(template, table: list, tensors: dict, arch: str, what: str) -> tuple[dict, set]:
    """funcdl's parameter tree from the checkpoint's tensors, row by row; the names used."""
    flat, used = {}, set()
    for names, path, transposed in table:
        expected = _get(template, path).shape
        want = _hf_shape(expected, len(names), transposed)
        parts = []
        for name in names:
            if name not in tensors:
                raise ValueError(f"{arch} checkpoint: missing tensor {name!r} (funcdl's {'/'.join(map(str, path))});"
                                 " the checkpoint is incomplete or not of this architecture")
            a = tensors[name]
            if a.shape != want:
                raise ValueError(f"{arch} checkpoint: tensor {name!r} has shape {a.shape}, but config.json ({what}) "
                                 f"implies {want}")
            parts.append(a.T if transposed else a)
            used.add(name)
        flat[path] = np.concatenate(parts, -1) if len(parts) > 1 else parts[0]
    params = jax.tree_util.tree_map_with_path(lambda p, _: jax.numpy.asarray(flat[_path_key(p)]), template)
    return params, used


def _check_rest(tensors: dict, used: set, ties: dict, arch: str) -> None:
    """Tied copies must equal their source; any other tensor the model has no place for is refused."""
    for name, source in ties.items():
        if name in tensors:
            if source in tensors and not np.allclose(tensors[name], tensors[source], rtol=0, atol=1e-6):
                raise ValueError(f"{arch} checkpoint: tensor {name!r} differs from {source!r}; funcdl's models tie "
                                 "them (an untied output layer is not supported)")
            used.add(name)
    for name in sorted(tensors):
        if name not in used and not any(pat in name for pat in _IGNORED):
            raise ValueError(f"{arch} checkpoint: unexpected tensor {name!r} (shape {tensors[name].shape}); funcdl's "
                             "mapping has no place for it")


def import_hf(path) -> tuple[str, dict, dict]:
    """``(model name, builder options, params)`` of a Hugging Face GPT-2 or BERT model folder.

    ``build_task(model, options, vocab_size)`` rebuilds the funcdl model the params belong to (float32). Raises a
    one-line ValueError for an unsupported architecture or option, a missing tensor or a shape that does not match
    config.json, naming it.
    """
    folder = Path(path)
    cfg = _read_config(folder)
    arch = (cfg.get("architectures") or [None])[0]
    if arch not in SUPPORTED:
        raise ValueError(f"{folder}: architecture {arch!r} (model_type {cfg.get('model_type')!r}) is not supported;"
                         f" funcdl imports {', '.join(SUPPORTED)}")
    tensors = _normalise(read_tensors(folder))
    model = SUPPORTED[arch]
    try:
        if model == "gpt":
            options = _gpt_options(cfg, arch)
            prefix = "transformer." if any(n.startswith("transformer.") for n in tensors) else ""
            ties = {"lm_head.weight": prefix + "wte.weight"}
        else:
            options = _bert_options(cfg, arch, tensors, folder)
            prefix = "bert." if any(n.startswith("bert.") for n in tensors) else ""
            ties = {"cls.predictions.decoder.weight": prefix + "embeddings.word_embeddings.weight",
                    "cls.predictions.decoder.bias": "cls.predictions.bias"}
        vocab = int(cfg["vocab_size"])
    except KeyError as err:
        raise ValueError(f"{folder}/config.json has no {err.args[0]!r}, which {arch} needs") from None
    config = config_of(model, options, vocab)
    module = gpt if model == "gpt" else bert
    template = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), config)[0])
    table = _gpt_table(config, prefix) if model == "gpt" else _bert_table(config, prefix)
    what = ", ".join(f"{k}={v}" for k, v in options.items() if k in ("n_layer", "n_embd", "d_model", "d_ff",
                                                                      "block_size", "max_len"))
    params, used = _fill(template, table, tensors, arch, f"vocab_size={vocab}, {what}")
    _check_rest(tensors, used, ties, arch)
    return model, options, params


# -- runs -------------------------------------------------------------------------------------------------------


def load_run(run_dir) -> tuple[str, dict, object, dict]:
    """``(model, options, config, params)`` of a run directory (``funcdl train`` or ``funcdl import hf``) without
    its data: the vocabulary's size comes from the checkpoint's embedding table."""
    from funcdl.training import checkpoint

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} is not a run directory (no config.json)")
    cfg = json.loads((run_dir / "config.json").read_text())
    model = cfg.get("model")
    if model not in ("gpt", "bert_mlm"):
        raise ValueError(f"{run_dir} is a run of {model!r}; Hugging Face export takes gpt and bert_mlm runs")
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.get("model_options", {}).items()}
    arrays, _ = checkpoint.load_arrays(run_dir)
    if "params/['wte']" not in arrays:
        raise ValueError(f"{run_dir}/checkpoint.npz has no params/['wte']; it is not a {model} checkpoint")
    if model == "bert_mlm" and not options.get("max_len"):
        options["max_len"] = int(arrays["params/['wpe']"].shape[0])
    task = build_task(model, options, int(arrays["params/['wte']"].shape[0]))
    shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0))[0]       # no random draws: the values are replaced
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    trees, _ = checkpoint.restore(run_dir / "checkpoint.npz", {"params": template})
    return model, options, task.extras["config"], trees["params"]


# -- export -----------------------------------------------------------------------------------------------------


def _value(params, path: tuple) -> np.ndarray:
    """The parameter at ``path``; a bias or norm shift the model was built without (``bias=False``) is zeros."""
    try:
        return np.asarray(_get(params, path), np.float32)
    except KeyError:
        if path[-1] != "b":
            raise
        return np.zeros(np.shape(_get(params, path[:-1])["w"])[-1], np.float32)


def _gpt_export(config: gpt.Config) -> tuple[str, dict, list]:
    small = config.vocab_size <= 50256          # GPT-2's <|endoftext|> id is not in a small vocabulary
    hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": config.vocab_size,
          "n_positions": config.block_size, "n_embd": config.n_embd, "n_layer": config.n_layer,
          "n_head": config.n_head, "n_inner": config.d_ff,
          "activation_function": "gelu_new" if config.activation == "gelu_tanh" else "gelu",
          "layer_norm_epsilon": config.norm_eps, "resid_pdrop": config.dropout, "embd_pdrop": config.dropout,
          "attn_pdrop": config.dropout, "scale_attn_weights": True, "tie_word_embeddings": True, "dtype": "float32"}
    if small:
        hf |= {"bos_token_id": None, "eos_token_id": None}
    return "gpt", hf, _gpt_table(config, "transformer.")


def _bert_export(config: bert.Config) -> tuple[str, dict, list]:
    if config.norm != "post":
        raise ValueError("Hugging Face's BERT is post-norm and this encoder is pre-norm (norm=pre): only a model "
                         "built with norm=post exports as BERT")
    arch = "BertForMaskedLM" if config.mlm_head else "BertModel"
    hf = {"architectures": [arch], "model_type": "bert", "vocab_size": config.vocab_size,
          "hidden_size": config.d_model, "num_hidden_layers": config.n_layer,
          "num_attention_heads": config.n_head, "intermediate_size": config.d_ff or 4 * config.d_model,
          "hidden_act": "gelu_pytorch_tanh" if config.activation == "gelu_tanh" else "gelu",
          "max_position_embeddings": config.max_len, "type_vocab_size": max(config.type_vocab_size, 1),
          "layer_norm_eps": config.norm_eps, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
          "tie_word_embeddings": True, "dtype": "float32"}
    # no token types: one all-zero type row adds nothing, as funcdl's model does
    table = _bert_table(dataclasses.replace(config, type_vocab_size=max(config.type_vocab_size, 1)),
                        "bert." if config.mlm_head else "")
    return "bert_mlm", hf, table


def export_hf(source, out_dir, *, config=None) -> Path:
    """Write ``config.json`` and ``model.safetensors`` of a Hugging Face GPT-2 (``GPT2LMHeadModel``) or BERT
    (``BertForMaskedLM`` with the MLM head, else ``BertModel``) into ``out_dir``, which
    ``transformers.AutoModel*.from_pretrained(out_dir)`` loads. ``source``: a run directory, or a params tree
    with its ``config`` (``gpt.Config`` / ``bert.Config``). A classification head (``n_classes``) is not written.
    """
    from safetensors.numpy import save_file

    params = source
    if config is None:
        _, _, config, params = load_run(source)
    if isinstance(config, gpt.Config):
        _, hf, table = _gpt_export(config)
    elif isinstance(config, bert.Config):
        _, hf, table = _bert_export(config)
    else:
        raise ValueError(f"export_hf: a gpt.Config or bert.Config is needed, got {type(config).__name__}")
    tensors = {}
    for names, path, transposed in table:
        if path == ("wtt",) and "wtt" not in params:
            value = np.zeros((1, config.d_model), np.float32)
        else:
            value = _value(params, path)
        for name, part in zip(names, np.split(value, len(names), axis=-1), strict=True):
            tensors[name] = np.ascontiguousarray(part.T if transposed else part)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    return out
