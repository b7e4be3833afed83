"""Hugging Face checkpoints in and out (funcdl.models.hf, ``funcdl import hf`` / ``funcdl export hf``).

Small random GPT-2 and BERT models are built by ``transformers`` itself and saved with ``save_pretrained`` into
tmp_path (nothing is downloaded); funcdl's logits and every hidden state must equal theirs to 1e-5 in float32
after import, ``transformers`` must load funcdl's export with the same outputs, the imported models' hand-derived
gradients must equal pure autodiff's, and bad checkpoints must fail with one line naming the tensor.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import bert, gpt, hf

import funcdl as fd

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")

TOL = 1e-5
V, T, D, L, H = 50, 16, 32, 2, 4


def _save(model, folder):
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A random GPT2LMHeadModel, BertForMaskedLM and BertModel (with its pooler), saved; weights at std 0.2 so
    that the layers do more than pass their input through."""
    from transformers import BertConfig, BertForMaskedLM, BertModel, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    gcfg = GPT2Config(vocab_size=V, n_positions=T, n_embd=D, n_layer=L, n_head=H, initializer_range=0.2,
                      bos_token_id=None, eos_token_id=None)
    bcfg = BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=H, intermediate_size=64,
                      max_position_embeddings=T, initializer_range=0.2)
    out = {"gpt2": GPT2LMHeadModel(gcfg), "bert_mlm": BertForMaskedLM(bcfg), "bert": BertModel(bcfg)}
    return {k: (_save(m.eval(), root / k), m.eval()) for k, m in out.items()}


def _inputs():
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, (2, T))
    types = rng.integers(0, 2, (2, T))
    mask = np.ones((2, T), bool)
    mask[1, 11:] = False                      # the second row is padded
    return x, types, mask


def _theirs(model, x, types=None, mask=None):
    kw = {} if types is None else {"token_type_ids": torch.tensor(types),
                                   "attention_mask": torch.tensor(mask.astype(np.int64))}
    with torch.no_grad():
        return model(torch.tensor(x), output_hidden_states=True, **kw)


def _close(ours, theirs, what):
    err = float(np.abs(np.asarray(ours, np.float64) - theirs.numpy()).max())
    assert err <= TOL, f"{what}: max difference {err:.2e}"


def _imported(folder):
    name, options, params = hf.import_hf(folder)
    params = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    return name, options, hf.config_of(name, options, V), params


@pytest.mark.parametrize("fused", [True, False])
def test_gpt2_import_matches_transformers(folders, fused):
    folder, model = folders["gpt2"]
    name, options, config, params = _imported(folder)
    assert name == "gpt" and options["activation"] == "gelu_tanh" and options["bias"]
    config = dataclasses.replace(config, fused=fused)
    x, _, _ = _inputs()
    ref = _theirs(model, x)
    logits, states = jax.jit(lambda p, x: (gpt.apply(p, {}, x, config)[0], gpt.hidden_states(p, x, config)))(
        params, jnp.asarray(x))
    _close(logits, ref.logits, "logits")
    assert len(states) == len(ref.hidden_states) == L + 1
    for i, (a, b) in enumerate(zip(states, ref.hidden_states, strict=True)):
        _close(a, b, f"hidden state {i}")


@pytest.mark.parametrize("kind", ["bert_mlm", "bert"])
def test_bert_import_matches_transformers(folders, kind):
    folder, model = folders[kind]
    name, options, config, params = _imported(folder)
    assert name == "bert_mlm" and config.norm == "post" and config.norm_eps == 1e-12
    assert config.pooler == (kind == "bert") and config.mlm_head == (kind == "bert_mlm")
    x, types, mask = _inputs()
    ref = _theirs(model, x, types, mask)

    @jax.jit
    def forward(p, x, mask, types):
        kw = {"mask": mask, "token_types": types}
        head = bert.apply if kind == "bert_mlm" else bert.pool
        return bert.hidden_states(p, x, config, **kw), head(p, {}, x, config, **kw)[0]

    states, out = forward(params, jnp.asarray(x), jnp.asarray(mask), jnp.asarray(types))
    assert len(states) == len(ref.hidden_states) == L + 1
    for i, (a, b) in enumerate(zip(states, ref.hidden_states, strict=True)):
        _close(a, b, f"hidden state {i}")
    if kind == "bert_mlm":
        _close(out, ref.logits, "logits")
    else:
        _close(out, ref.pooler_output, "pooler output")


@pytest.mark.parametrize("kind", ["gpt2", "bert_mlm", "bert"])
def test_export_loads_in_transformers(folders, kind, tmp_path):
    """funcdl's export of the imported model, reloaded by transformers, gives the original's outputs."""
    folder, model = folders[kind]
    _, _, config, params = _imported(folder)
    hf.export_hf(params, tmp_path / "out", config=config)
    again = type(model).from_pretrained(tmp_path / "out").eval()
    x, types, mask = _inputs()
    a = _theirs(model, x, *((types, mask) if kind != "gpt2" else ()))
    b = _theirs(again, x, *((types, mask) if kind != "gpt2" else ()))
    for i, (s, t) in enumerate(zip(a.hidden_states, b.hidden_states, strict=True)):
        _close(t.numpy(), s, f"{kind} hidden state {i} after export")
    if kind != "bert":
        _close(b.logits.numpy(), a.logits, f"{kind} logits after export")
    else:
        _close(b.pooler_output.numpy(), a.pooler_output, "pooler output after export")


def test_export_of_a_funcdl_gpt_without_biases(tmp_path):
    """nanoGPT's layout (no biases, exact GELU, its own widths) exports as a GPT-2 with zero biases."""
    from transformers import GPT2LMHeadModel

    config = gpt.Config(vocab_size=V, block_size=T, n_layer=1, n_head=2, n_embd=16, d_ff=24, norm_eps=1e-6)
    params = jax.jit(lambda k: jax.tree.map(lambda a: a.astype(jnp.float32) * 3, gpt.init(k, config)[0]))(
        jax.random.key(0, impl="unsafe_rbg"))
    assert "b" not in params["blocks"][0]["mlp"]["fc"]
    hf.export_hf(params, tmp_path, config=config)
    model = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    x, _, _ = _inputs()
    logits = jax.jit(lambda p, x: gpt.apply(p, {}, x, config)[0])(params, jnp.asarray(x))
    _close(logits, _theirs(model, x).logits, "logits")


def _rel_errors(a, b):
    return {jax.tree_util.keystr(p): float(np.abs(x - y).max() / max(np.abs(x).max() + np.abs(y).max(), 1e-300))
            for (p, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True)}


@pytest.mark.parametrize("kind", ["gpt2", "bert_mlm"])
def test_imported_gradients_match_autodiff(folders, kind):
    """The imported model in float64: hand-derived backward rules against jax.grad of the references, every leaf
    (BERT: embedding norm, token types, post-norm blocks and the MLM head). The first block only, to compile fast:
    the second is the same code."""
    _, _, config, params = _imported(folders[kind][0])
    params = jax.tree.map(lambda a: a.astype(jnp.float64), {**params, "blocks": params["blocks"][:1]})
    config = dataclasses.replace(config, n_layer=1)
    x, types, mask = _inputs()
    x = jnp.asarray(x, jnp.int32)
    if kind == "gpt2":
        def loss(p):
            return gpt.loss(p, {}, {"x": x, "y": jnp.roll(x, -1, 1)}, config)[0]
    else:
        kw = {"mask": jnp.asarray(mask), "token_types": jnp.asarray(types, jnp.int32)}

        def loss(p):
            return fd.softmax_cross_entropy(bert.apply(p, {}, x, config, **kw)[0], x)

    hand, auto = jax.jit(lambda p: (jax.grad(loss)(p), jax.grad(fd.autodiff(loss))(p)))(params)
    errors = _rel_errors(hand, auto)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-8, f"{worst}: relative error {errors[worst]:.2e}"
    assert len(errors) == len(jax.tree.leaves(params)) >= 16


def test_import_and_export_commands(folders, tmp_path, capsys):
    """``funcdl import hf`` writes a run that --init-from (load_matching) takes whole and ``funcdl export hf``
    writes back the same tensors."""
    from safetensors.numpy import load_file

    from funcdl.commands import hf as hf_cmd
    from funcdl.commands.cli import main
    from funcdl.training import checkpoint

    folder, _ = folders["bert_mlm"]
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 0
    assert "--init-from" in capsys.readouterr().out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "bert_mlm" and cfg["imported_from"]["architecture"] == "BertForMaskedLM"
    task, params = hf_cmd.load_imported(run)
    template = jax.eval_shape(task.init, jax.random.PRNGKey(1))[0]
    _, copied, skipped = checkpoint.load_matching(run, template)
    assert skipped == [] and len(copied) == len(jax.tree.leaves(params))
    assert main(["export", "hf", str(run), "--out", str(out)]) == 0
    before, after = load_file(str(folder / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert sorted(before) == sorted(after)
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert main(["import", "hf", str(folder), "--out", str(run)]) == 2          # an existing run is not overwritten


def test_pytorch_bin_is_read(folders, tmp_path):
    folder, model = folders["gpt2"]
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    a, b = hf.import_hf(tmp_path)[2], hf.import_hf(folder)[2]
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _copy(folder, dest, *, config=None, drop=None, tensors=None):
    from safetensors.numpy import load_file, save_file

    dest.mkdir()
    cfg = json.loads((folder / "config.json").read_text()) | (config or {})
    (dest / "config.json").write_text(json.dumps(cfg))
    t = load_file(str(folder / "model.safetensors"))
    t = {k: v for k, v in t.items() if k != drop} | (tensors or {})
    save_file(t, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def _one_line_error(folder, match):
    with pytest.raises(ValueError, match=match) as err:
        hf.import_hf(folder)
    assert "\n" not in str(err.value)


def test_bad_checkpoints_name_what_is_wrong(folders, tmp_path):
    gpt_folder, bert_folder = folders["gpt2"][0], folders["bert_mlm"][0]
    _one_line_error(_copy(gpt_folder, tmp_path / "arch", config={"architectures": ["LlamaForCausalLM"]}),
                    "architecture 'LlamaForCausalLM'.*not supported")
    _one_line_error(_copy(gpt_folder, tmp_path / "missing", drop="transformer.h.1.mlp.c_fc.bias"),
                    r"missing tensor 'transformer\.h\.1\.mlp\.c_fc\.bias'")
    _one_line_error(_copy(gpt_folder, tmp_path / "shape", config={"n_positions": 32}),
                    r"tensor 'transformer\.wpe\.weight' has shape \(16, 32\).*implies \(32, 32\)")
    _one_line_error(_copy(bert_folder, tmp_path / "bshape", config={"intermediate_size": 48}),
                    r"'bert\.encoder\.layer\.0\.intermediate\.dense\.weight' has shape \(64, 32\)")
    _one_line_error(_copy(bert_folder, tmp_path / "extra", tensors={"bert.encoder.layer.9.x": np.zeros(3, np.float32)}),
                    r"unexpected tensor 'bert\.encoder\.layer\.9\.x'")
    _one_line_error(_copy(gpt_folder, tmp_path / "act", config={"activation_function": "relu"}),
                    "activation_function='relu'")
    _one_line_error(_copy(gpt_folder, tmp_path / "untied", tensors={"lm_head.weight": np.ones((V, D), np.float32)}),
                    "'lm_head.weight' differs")
    with pytest.raises(ValueError, match="no config.json"):
        hf.import_hf(tmp_path)


def test_sampling_an_imported_gpt2_takes_ids(folders, tmp_path, capsys):
    import argparse

    from funcdl.commands import hf as hf_cmd

    run = tmp_path / "run"
    hf_cmd.import_run(folders["gpt2"][0], run)
    args = argparse.Namespace(checkpoint=str(run), ids=None, samples=1, seed=0, tokens=1, temperature=0.0,
                              top_k=None, top_p=None, no_cache=False)
    assert hf_cmd.is_imported(run)
    with pytest.raises(ValueError, match="has no vocabulary.*--ids"):
        hf_cmd.sample_imported(args)
    args.ids = "1,2,3"
    assert hf_cmd.sample_imported(args) == 0
    ids = [int(t) for t in capsys.readouterr().out.strip().split(",")]
    assert ids[:3] == [1, 2, 3] and len(ids) == 4 and all(0 <= i < V for i in ids)
