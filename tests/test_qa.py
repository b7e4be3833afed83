"""Question answering: the SQuAD metrics, the synthetic reading-comprehension data, and the T5/BART-style
encoder-decoder (models/qa.py): relative position buckets, whole-model gradients against pure autodiff, greedy and
beam decoding, and bad input."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from funcdl.models import qa

import funcdl as fd
from funcdl.data import qa as qadata
from funcdl.data.qa import exact_match, f1, normalize_answer, squad_scores
from funcdl.training.task import DataInfo

TOL = 1e-8      # float64: hand and autodiff agree to rounding
VOCAB = 8       # the tiny model's vocabulary: PAD, BOS, EOS and 5 words


# ------------------------------------------------------------------------------------------------ SQuAD metrics
def test_normalize_answer_follows_the_squad_script():
    assert normalize_answer("The  Red Cat!") == "red cat"
    assert normalize_answer("An apple, a day.") == "apple day"
    assert normalize_answer("well-known") == "wellknown"          # punctuation goes, it is not a space
    assert normalize_answer("theatre") == "theatre"               # articles are whole words only
    assert normalize_answer("  a   an the ") == ""


def test_exact_match_and_f1_on_hand_examples():
    assert exact_match("the red cat", "Red cat.") == 1.0
    assert exact_match("red cat", "cat") == 0.0
    assert exact_match("cat", ["dog", "a cat"]) == 1.0             # the best over several gold answers
    assert f1("red cat", "cat") == pytest.approx(2 / 3)           # precision 1/2, recall 1
    assert f1("the cat sat", "a cat sat down") == pytest.approx(0.8)   # precision 1, recall 2/3
    assert f1("cat cat", "cat") == pytest.approx(2 / 3)           # tokens are a multiset: one common token
    assert f1("dog", "cat") == 0.0
    assert f1("red cat", ["dog", "the red cat"]) == 1.0
    assert f1("the", "a") == 1.0 and f1("a", "cat") == 0.0        # empty after normalising: 1 only against empty
    scores = squad_scores(["red cat", "dog", "1987"], ["cat", "dog", "1988"])
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="2 predictions for 1"):
        squad_scores(["a", "b"], ["a"])


# ------------------------------------------------------------------------------------------------ the data set
def _facts(context):
    """The (person, relation, value index) triples of a context, read back from its sentences."""
    out = []
    for sentence in context.split(" . "):
        w = sentence.rstrip(" .").split()
        rel, value = {"lives": ("city", w[-1]), "works": ("job", w[-1]), "owns": ("pet", w[-1]),
                      "was": ("year", w[-1]), "plays": ("sport", w[-1])}[w[1]]
        out.append((qadata.NAMES.index(w[0]), rel, qadata.VALUES[rel].index(value)))
    return out


def test_synthetic_qa_holds_out_facts_and_copies_answers():
    ds = qadata.load_synthetic_qa(n_train=1500, n_val=50, n_test=150)
    decode, held = ds.extras["decode"], ds.extras["held_out"]
    assert all(np.array_equal(held[r], t) for r, t in qadata.held_out_facts(0).items())
    train_words = set()
    for x in ds.splits["train"]["x"]:                   # no training fact is held out
        question, context = decode(x).split(" context : ")
        train_words |= set(decode(x).split())
        assert not any(held[r][p, v] for p, r, v in _facts(context))
    for x, y, answer in zip(ds.splits["test"]["x"], ds.splits["test"]["y"], ds.extras["answers"]["test"],
                            strict=True):
        question, context = decode(x).split(" context : ")
        assert all(held[r][p, v] for p, r, v in _facts(context))      # every test fact is held out
        assert f" {answer} " in f" {context} "                         # the answer is a span of the context
        assert decode(y) == answer and y[len(answer.split())] == qadata.EOS
        assert set(decode(x).split()) <= train_words                   # every word was seen in training
    assert ds.splits["train"]["x"].shape[1] == qadata.SRC_LEN and ds.splits["test"]["y"].shape[1] == qadata.TGT_LEN
    with pytest.raises(ValueError, match="more than the length 3"):
        qadata.VOCAB.encode("anna lives in oslo", qadata.TGT_LEN)
    with pytest.raises(ValueError, match="'atlantis' is not in the vocabulary"):
        qadata.VOCAB.encode("anna lives in atlantis")


# ------------------------------------------------------------------------------------------- relative positions
def test_relative_position_buckets_follow_t5():
    """32 buckets, max distance 128. Bidirectional: 16 per direction, exact below 8, then
    8 + floor(log(n/8) / log(16) * 8); causal: exact below 16, then 16 + floor(log(n/16) / log(8) * 16)."""
    r = np.array([0, -1, -7, -8, -15, -16, -32, -127, -128, -1000, 1, 7, 8, 16, 200])
    bi = qa.relative_position_bucket(r, bidirectional=True)
    assert bi.tolist() == [0, 1, 7, 8, 9, 10, 12, 15, 15, 15, 17, 23, 24, 26, 31]
    causal = qa.relative_position_bucket(r, bidirectional=False)
    assert causal.tolist() == [0, 1, 7, 8, 15, 16, 21, 31, 31, 31, 0, 0, 0, 0, 0]
    small = qa.relative_position_bucket(np.arange(-6, 7), bidirectional=True, num_buckets=8, max_distance=6)
    assert small.tolist() == [3, 3, 3, 2, 2, 1, 0, 5, 6, 6, 7, 7, 7]


# ------------------------------------------------------------------------------------------------- the model
@functools.cache
def _setup(style):
    """A tiny model (float64), shared by the tests (one compilation of its init)."""
    config = qa.Config(vocab_size=VOCAB, src_len=10, tgt_len=3, style=style, n_layer=1, n_head=2, d_model=8,
                       num_buckets=8, max_distance=12, question_end=3)
    key = jax.random.key(0, impl="unsafe_rbg")
    params = jax.jit(lambda k: jax.tree.map(lambda a: a.astype(jnp.float64), qa.init(k, config)[0]))(key)
    x = np.random.default_rng(1).integers(3, VOCAB, (3, 10))
    x[1, 6:] = qa.PAD
    return config, params, jnp.asarray(x, jnp.int32)


# T5 is the registered default, whose whole-model gradient tests/test_models.py already compares with autodiff
@pytest.mark.parametrize("style", ["bart"])
def test_model_gradient_equals_autodiff(style):
    config, params, x = _setup(style)
    batch = {"x": x, "y": jnp.asarray([[5, 6, 2], [7, 2, 0], [4, 4, 3]], jnp.int32)}

    def value(p):
        return qa.loss(p, {}, batch, config)[0]

    g_hand, g_auto = jax.jit(lambda p: (jax.grad(value)(p), jax.grad(fd.autodiff(value))(p)))(params)
    assert jax.tree.structure(g_hand) == jax.tree.structure(g_auto)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_hand), jax.tree.leaves(g_auto), strict=True):
        err = float(jnp.max(jnp.abs(a - b)) / max(1e-12, float(jnp.max(jnp.abs(a)) + jnp.max(jnp.abs(b)))))
        assert err <= TOL, f"{style} {jax.tree_util.keystr(path)}: relative error {err:.2e}"
    assert float(jnp.max(jnp.abs(g_hand["enc"]["rel" if style == "t5" else "wpe"]))) > 0
    assert float(jnp.max(jnp.abs(g_hand["enc"]["match"]))) > 0


def test_exact_match_feature_marks_words_shared_by_question_and_context():
    words = "who lives in lima ? context : vera lives in oslo . leo lives in lima .".split()
    ids = jnp.asarray([[qadata.VOCAB.index[w] for w in words] + [qa.PAD] * 3], jnp.int32)
    flag = np.asarray(qa.exact_match_feature(ids, qadata.VOCAB.index["context"]))[0]
    shared = {"lives", "in", "lima"}
    in_question = [w in shared for w in words[:5]]                       # "who", "?" are not in the context
    in_context = [w in shared for w in words[7:]]                        # nor "vera", "oslo", "leo", "."
    assert flag.tolist() == in_question + [False, False] + in_context + [False] * 3


def test_beam_search_one_is_greedy_and_wide_beam_is_exact():
    """3 answer tokens from a vocabulary of V = 8: a beam of V^2 = 64 keeps every prefix, so beam search is
    exhaustive and its score is the best log-probability over all V^3 answers (>= greedy's); a beam of 1 is greedy
    decoding."""
    config, params, x = _setup("t5")
    params = {**params, "wte": 3.0 * params["wte"]}          # a peaked distribution: greedy is not all one token
    greedy = qa.decode_greedy(params, x, config)
    one, _ = qa.decode_beam(params, x, config, beam=1, length_penalty=0.0)
    np.testing.assert_array_equal(np.asarray(one), np.asarray(greedy))
    best, score = qa.decode_beam(params, x, config, beam=VOCAB ** 2, length_penalty=0.0)
    every = np.asarray(list(itertools.product(range(VOCAB), repeat=3)), np.int32)        # (V^3, 3)
    answers = np.concatenate([np.broadcast_to(every, (len(x), *every.shape)), np.asarray(best)[:, None],
                              np.asarray(greedy)[:, None]], axis=1)                # (B, V^3 + 2, 3): one compile
    logprob = qa.sequence_logprob(params, jnp.repeat(x, answers.shape[1], axis=0), jnp.asarray(answers.reshape(-1, 3)),
                                  config)
    logprob = np.asarray(logprob).reshape(len(x), -1)
    np.testing.assert_allclose(np.asarray(score), logprob[:, :-2].max(1), rtol=1e-9)
    np.testing.assert_allclose(np.asarray(score), logprob[:, -2], rtol=1e-9)      # the score is best's log-prob
    assert np.all(logprob[:, -2] >= logprob[:, -1] - 1e-12)                        # beam's answer beats greedy's


def test_bad_input_gives_one_line_errors():
    with pytest.raises(ValueError, match="unknown style 'gpt'; valid styles: t5, bart") as err:
        qa.Config(style="gpt")
    config = qa.Config(vocab_size=12, src_len=10, tgt_len=4, style="bart")
    params, x = {}, jnp.ones((3, 10), jnp.int32)                # the lengths are checked before any parameter is read
    long = jnp.ones((2, config.src_len + 1), jnp.int32)
    with pytest.raises(ValueError, match="source .* of 11 tokens is longer than the model's max length 10"):
        qa.decode_greedy(params, long, config)
    with pytest.raises(ValueError, match="answer of 5 tokens is longer than the model's max length 4") as err:
        qa.loss(params, {}, {"x": x, "y": jnp.ones((3, 5), jnp.int32)}, config)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="qa needs a seq2seq data set"):
        qa.build(DataInfo("mnist1d", (40,), num_classes=10))
    no_separator = DataInfo("my-qa", (10,), vocab_size=12, extras={"task": "seq2seq", "src_len": 10, "tgt_len": 4})
    with pytest.raises(ValueError, match="which 'my-qa' does not give; pass --set match_feature=false"):
        qa.build(no_separator)
    assert qa.build(no_separator, match_feature=False).extras["config"].question_end == -1
