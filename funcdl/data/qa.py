"""A synthetic reading-comprehension task (``synthetic_qa``) and the SQuAD metrics (exact match and F1).

Each example is a short *context* of 3-5 facts about 2-3 invented people and a *question* about one fact; the
answer is a span copied from the context::

    context:  "vera owns a red parrot . leo lives in lima . vera was born in 1987 ."
    question: "when was vera born ?"                             answer: "1987"
    question: "what pet does vera own ?"                         answer: "red parrot"
    question: "who lives in lima ?"                              answer: "leo"

Facts are drawn at random for every context (which person lives where is not a property of the name), so the
answer cannot be remembered from training: it has to be read. Within one context a person has at most one fact
of each relation and no two people share a value of a relation (nor a kind of pet), so every question has
exactly one answer.

Held out for real: a fact is a triple (person, relation, value) — for a pet, (person, "pet", animal). A fixed
random quarter of all triples is held out: training contexts are made only of the other triples, validation and
test contexts only of held-out ones. So no fact of a test context — in particular not the one asked about, nor
the question with its answer — ever occurs in training, while every word does (the vocabulary is fully trained).

Tokenisation is by word (punctuation is its own word: "." "?" "'s"); the loader builds the vocabulary from the
fixed word lists, with ``PAD`` = 0, ``BOS`` = 1, ``EOS`` = 2 as in ``funcdl.data.synthetic``. The source is the
question followed by ``context :`` and the context; the target is the answer's words then EOS, padded.
Arrays: ``x`` (N, 40) source ids, ``y`` (N, 3) target ids; 100000 training examples, 1000 validation, 2000 test.

The metrics follow the official SQuAD evaluation script: answers are normalised (lower case, punctuation
removed, the articles a/an/the removed, whitespace collapsed); exact match is 1 when the normalised strings are
equal; F1 is the harmonic mean of the precision and recall of the normalised tokens counted as a multiset (a
bag of words, so "red cat" vs "cat" has precision 1, recall 1/2, F1 2/3). With several gold answers each metric
takes the best over them. Both are reported as fractions in [0, 1] here (the script prints 100 times that).
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np

from .base import Dataset
from .synthetic import SeqVocab

__all__ = ["PAD", "BOS", "EOS", "WordVocab", "VOCAB", "SRC_LEN", "TGT_LEN", "held_out_facts", "make_examples",
           "encode_examples", "load_synthetic_qa", "normalize_answer", "exact_match", "f1", "squad_scores"]

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")
SRC_LEN, TGT_LEN = 40, 3       # longest question + context is 8 + 2 + 5 * 6 = 40 words; longest answer 2 words

NAMES = ("anna", "ben", "carla", "david", "elena", "felix", "greta", "hugo", "ida", "jonas", "karin", "leo",
         "maria", "nils", "olga", "paul", "rosa", "sven", "tara", "ulf", "vera", "walter", "xenia", "zoe", "adam",
         "bella", "chris", "dora", "emil", "fiona", "gino", "hanna", "igor", "julia", "kurt", "lena", "marco",
         "nora", "oscar", "petra")
CITIES = ("paris", "berlin", "oslo", "lima", "cairo", "tokyo", "rome", "madrid", "dublin", "vienna", "prague",
          "boston", "denver", "sydney", "nairobi", "lisbon", "warsaw", "seoul", "quito", "delhi")
JOBS = ("baker", "teacher", "doctor", "pilot", "farmer", "lawyer", "nurse", "painter", "plumber", "chef",
        "dentist", "writer", "singer", "tailor", "engineer", "librarian")
COLORS = ("red", "blue", "green", "black", "white", "brown", "yellow", "grey", "orange", "purple")
ANIMALS = ("cat", "dog", "horse", "parrot", "rabbit", "goat", "turtle", "hamster", "pony", "snake")
SPORTS = ("football", "tennis", "chess", "golf", "hockey", "cricket", "rugby", "basketball", "volleyball", "polo")
YEARS = tuple(str(y) for y in range(1940, 2010))

# relation -> (fact template, [(question template, answer part)]). {n} is the person, {v} the value (for "pet"
# a pair colour animal, {c} and {a}). The answer part names what is copied: "v" the value, "n" the person,
# "c" the pet's colour, "pet" colour and animal.
RELATIONS = {
    "city": ("{n} lives in {v} .", [("where does {n} live ?", "v"), ("who lives in {v} ?", "n")]),
    "job": ("{n} works as a {v} .", [("what does {n} do for a living ?", "v"), ("who works as a {v} ?", "n")]),
    "pet": ("{n} owns a {c} {a} .", [("what pet does {n} own ?", "pet"), ("what color is {n} 's {a} ?", "c")]),
    "year": ("{n} was born in {v} .", [("when was {n} born ?", "v"), ("who was born in {v} ?", "n")]),
    "sport": ("{n} plays {v} .", [("which sport does {n} play ?", "v"), ("who plays {v} ?", "n")]),
}
VALUES = {"city": CITIES, "job": JOBS, "pet": ANIMALS, "year": YEARS, "sport": SPORTS}   # what a triple holds


class WordVocab(SeqVocab):
    """Three special tokens then words: ``encode`` splits on whitespace, ``decode`` joins with spaces (the
    synthetic translation sets' vocabulary, word by word)."""

    unit, sep, where = "the word", " ", "synthetic_qa: "


def _all_words():
    words = ["context", ":", "an"]
    for fact, questions in RELATIONS.values():
        for text in (fact, *(q for q, _ in questions)):
            words += [w for w in text.split() if not w.startswith("{")]
    return [*words, *NAMES, *CITIES, *JOBS, *COLORS, *ANIMALS, *SPORTS, *YEARS]



VOCAB = WordVocab(_all_words())


def held_out_facts(seed: int = 0, fraction: float = 0.25) -> dict:
    """relation -> a boolean table (person, value): True for the triples held out for validation and test."""
    rng = np.random.default_rng(seed)
    return {r: rng.random((len(NAMES), len(VALUES[r]))) < fraction for r in RELATIONS}


def _context(rng, allowed):
    """A list of (person, relation, value) facts: 2-3 people, 3-5 facts, every (person, value) allowed by
    ``allowed[relation]``, the values of a relation (the animals of pets) distinct within the context."""
    while True:
        n_people, n_facts = int(rng.integers(2, 4)), int(rng.integers(3, 6))
        people = [int(i) for i in rng.choice(len(NAMES), n_people, replace=False)]
        rels = list(RELATIONS)
        # (person, relation) pairs: every person gets one first, the rest are drawn among the unused pairs
        pairs = [(p, rels[int(rng.integers(len(rels)))]) for p in people]
        free = [(p, r) for p in people for r in rels if (p, r) not in pairs]
        pairs += [free[i] for i in rng.choice(len(free), n_facts - n_people, replace=False)]
        facts, used = [], collections.defaultdict(set)
        for p, r in pairs:
            options = [v for v in np.flatnonzero(allowed[r][p]) if v not in used[r]]
            if not options:
                break                                   # this person has no allowed value left: draw again
            v = int(options[int(rng.integers(len(options)))])
            used[r].add(v)
            value = (COLORS[int(rng.integers(len(COLORS)))], ANIMALS[v]) if r == "pet" else VALUES[r][v]
            facts.append((NAMES[p], r, value))
        else:
            return [facts[i] for i in rng.permutation(len(facts))]


_A_VOWEL = re.compile(r"\ba (?=[aeiou])")


def _render(fact, template):
    p, r, v = fact
    c, a = v if r == "pet" else ("", "")
    return _A_VOWEL.sub("an ", template.format(n=p, v=v, c=c, a=a))     # "an orange cat", "an engineer"


def make_examples(n: int, allowed, seed: int = 0) -> list[tuple[str, str, str]]:
    """``n`` (context, question, answer) triples whose facts are allowed by ``allowed`` (relation -> boolean table
    (person, value), as ``held_out_facts`` gives, or its negation)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        facts = _context(rng, allowed)
        fact = facts[int(rng.integers(len(facts)))]
        p, r, v = fact
        question, part = RELATIONS[r][1][int(rng.integers(2))]
        answer = {"n": p, "v": v, "c": v[0], "pet": " ".join(v) if r == "pet" else ""}[part]
        context = " ".join(_render(f, RELATIONS[f[1]][0]) for f in facts)
        out.append((context, _render(fact, question), answer))
    return out


def encode_examples(examples, src_len: int = SRC_LEN, tgt_len: int = TGT_LEN) -> dict:
    """{"x": (N, src_len) question + "context :" + context, "y": (N, tgt_len) answer then EOS} ids."""
    x = np.stack([VOCAB.encode(f"{q} context : {c}", src_len) for c, q, _ in examples])
    y = np.stack([VOCAB.encode(a, tgt_len, eos=True) for _, _, a in examples])
    return {"x": x, "y": y}


def load_synthetic_qa(data_dir=None, val_fraction: float | None = None, n_train: int = 100000, n_val: int = 1000,
                      n_test: int = 2000, seed: int = 0, **_) -> Dataset:
    """Synthetic reading comprehension; every fact of a validation or test context is a (person, relation, value)
    triple that never occurs in training. ``extras["answers"]`` holds the gold answer strings of val and test,
    ``extras["examples"]`` the first 50 (context, question, answer) triples of each held-out split and
    ``extras["held_out"]`` the table of held-out triples (``held_out_facts``)."""
    held_out = held_out_facts(seed)
    train = make_examples(n_train, {r: ~t for r, t in held_out.items()}, seed + 1)
    held = make_examples(n_val + n_test, held_out, seed + 2)
    parts = {"train": train, "val": held[:n_val], "test": held[n_val:]}
    splits = {k: encode_examples(v) for k, v in parts.items()}
    return Dataset("synthetic_qa", splits, "classification", num_classes=None, vocab_size=len(VOCAB),
                   extras={"task": "seq2seq", "vocab": VOCAB.tokens, "encode": VOCAB.encode, "decode": VOCAB.decode,
                           "src_len": SRC_LEN, "tgt_len": TGT_LEN, "pad": PAD, "bos": BOS, "eos": EOS,
                           "question_end": VOCAB.tokens.index("context"),
                           "answers": {k: [a for _, _, a in parts[k]] for k in ("val", "test")},
                           "examples": {k: parts[k][:50] for k in ("val", "test")},
                           "held_out": held_out,
                           "description": "reading comprehension: facts about people, copy the answer span"})


# ------------------------------------------------------------------------------------------------ SQuAD metrics
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace (the SQuAD script's order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _golds(gold) -> list[str]:
    golds = [gold] if isinstance(gold, str) else list(gold)
    if not golds:
        raise ValueError("squad metrics: give at least one gold answer")
    return golds


def exact_match(prediction: str, gold) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer (``gold``: a string or a list)."""
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in _golds(gold)))


def _f1(prediction: str, gold: str) -> float:
    pred, want = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not want:               # SQuAD 2.0: an empty answer scores 1 only against an empty answer
        return float(pred == want)
    same = sum((collections.Counter(pred) & collections.Counter(want)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(want)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, gold) -> float:
    """Token-overlap F1 of the normalised answers (the best over the gold answers)."""
    return max(_f1(prediction, g) for g in _golds(gold))


def squad_scores(predictions, golds) -> dict:
    """``{"exact_match", "f1"}``: the means over the examples (fractions in [0, 1])."""
    predictions, golds = list(predictions), list(golds)
    if len(predictions) != len(golds) or not golds:
        raise ValueError(f"squad_scores: {len(predictions)} predictions for {len(golds)} gold answers")
    return {"exact_match": sum(map(exact_match, predictions, golds)) / len(golds),
            "f1": sum(map(f1, predictions, golds)) / len(golds)}


def _register():
    from . import DATASETS, register_dataset

    if "synthetic_qa" not in DATASETS:
        register_dataset("synthetic_qa", load_synthetic_qa,
                         "synthetic reading comprehension: facts about invented people, copy the answer (seq2seq)")


_register()
