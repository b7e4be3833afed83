"""Plain-text math (as funcdl's docstrings write it) to MyST Markdown with LaTeX math roles.

The docstrings are written for ``help()``: ``dx = dY W^T``, ``sum_j P_ij dP_ij``, ``sqrt(var(x) + eps)``,
greek letters spelt out. :func:`docstring_to_myst` keeps the docstring's lines and layout and turns each
formula segment of a line into a ``{math}`` role (typeset by KaTeX); prose stays prose. A line is cut into
segments at runs of three or more spaces (the docstrings align side-by-side equations that way); a segment
is a formula when it has a formula sign (``=``, ``^``, ``_``, ``->``, ``sqrt(``...) and is not mostly English
words. The conversion never fails: an unknown character becomes text, so the worst case reads like the source.
"""

from __future__ import annotations

import re
import textwrap

GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "kappa", "lambda", "mu", "nu", "xi",
    "pi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Sigma",
    "Phi", "Psi", "Omega",
}
BIG = {"sum": r"\sum", "prod": r"\prod"}
FUNCTIONS = {
    "exp", "log", "tanh", "sin", "cos", "softmax", "softplus", "max", "min", "mean", "var", "sign", "floor",
    "ceil", "round", "clip", "argmax", "argmin", "rowsum", "relu", "gelu", "erf", "diag", "abs", "norm", "KL",
    "std", "logsumexp", "sigmoid", "silu", "mish", "selu", "elu", "Phi", "det", "tr", "rsqrt",
    "colsum", "cosh", "sinh", "arctan",
}
# multi-letter names the docstrings use as symbols (not English words)
SYMBOLS = {"xhat", "rstd", "rrms", "logits", "logvar", "dlogits", "grad", "bias", "dbias", "lr", "eps", "inf"}
STOPWORDS = {
    "the", "of", "and", "or", "is", "in", "so", "as", "to", "by", "on", "at", "an", "its", "for", "are", "not",
    "per", "one", "it", "no", "if", "be", "we", "all", "each", "over", "with", "where", "when", "a", "from",
    "then", "that", "this", "which", "than", "only", "else", "same", "also", "both", "into", "own", "gets",
    "get", "has", "kept", "keep", "see", "here", "any", "row", "rows", "sums", "column", "elsewise",
}
_SIGNS = re.compile(r"=|\^|->|<=|>=|\bsqrt\(|\b[A-Za-z]+_[A-Za-z0-9{]|\bsum_|\*\*")
_TOKEN = re.compile(
    r"(?P<code>``.+?``|`[^`]+`)"
    r"|(?P<str>\"[^\"]*\")"
    r"|(?P<num>\d+(?:\.\d+)?(?:e-?\d+)?)"
    r"|(?P<ident>[A-Za-z][A-Za-z0-9]*'*(?:_(?:\{[^{}]*\}|[A-Za-z0-9]+'*))?)"
    r"|(?P<ws>\s+)"
    r"|(?P<op>->|<=|>=|!=|==|\*\*|.)"
)
_TEXT_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "#": r"\#", "%": r"\%",
                 "&": r"\&", "$": r"\$", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}"}
_OPS = {"->": r"\to", "<=": r"\le", ">=": r"\ge", "!=": r"\ne", "==": "=", "*": r"\cdot", "{": r"\{", "}": r"\}",
        "#": r"\#", "%": r"\%", "&": r"\&", "$": r"\$", "\\": r"\backslash", "_": r"\_", ",": r",\,", ";": r";\;",
        "`": "'", "~": r"\sim", "'": "'", "@": r"\text{@}"}


def text_escape(s: str) -> str:
    """``s`` escaped for LaTeX text mode (inside ``\\text{}`` or ``\\texttt{}``)."""
    return "".join(_TEXT_ESCAPES.get(c, c) for c in s)


def _tokens(s: str) -> list[tuple[str, str]]:
    return [(m.lastgroup, m.group()) for m in _TOKEN.finditer(s)]


def _is_prose_word(word: str) -> bool:
    base = word.split("_")[0].rstrip("'")
    if base in GREEK or base in BIG or base in FUNCTIONS or base in SYMBOLS:
        return False
    return base.lower() in STOPWORDS or (len(base) >= 4 and base.isalpha() and "_" not in word)


def _group(toks: list, i: int) -> int | None:
    """Index of the ``)`` that closes the ``(`` at ``toks[i]``, or None when it is unbalanced."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j][1] == "(":
            depth += 1
        elif toks[j][1] == ")":
            depth -= 1
            if depth == 0:
                return j
    return None


def _ident(word: str) -> str:
    """One identifier, with its subscript, as LaTeX."""
    base, _, sub = word.partition("_")
    primes = ""
    while base.endswith("'"):
        base, primes = base[:-1], primes + "'"
    if base in BIG:
        head = BIG[base]
    elif base in GREEK:
        head = "\\" + base
    elif base == "eps":
        head = r"\epsilon"
    elif base == "inf":
        head = r"\infty"
    elif len(base) > 1 and base[0] == "d" and (base[1:] in GREEK or base[1:].endswith("hat")):
        head = "d" + _ident(base[1:])
    elif base in FUNCTIONS:
        head = rf"\operatorname{{{base}}}"
    elif base.endswith("hat") and 1 <= len(base) - 3 <= 2:
        head = rf"\hat{{{_ident(base[:-3])}}}"
    elif len(base) >= 4 or base.lower() in STOPWORDS:
        return rf"\text{{{text_escape(word)}}}"
    else:
        head = base
    head += primes
    if not sub:
        return head
    if sub.startswith("{") and sub.endswith("}"):
        return f"{head}_{{{to_latex(sub[1:-1])}}}"
    sub_primes = ""
    while sub.endswith("'"):
        sub, sub_primes = sub[:-1], sub_primes + "'"
    sub_tex = rf"\text{{{text_escape(sub)}}}" if len(sub) > 3 and sub.isalpha() else sub
    return f"{head}_{{{sub_tex}}}{sub_primes}"


def to_latex(s: str) -> str:
    """A plain-text formula (one segment of a docstring line) as a LaTeX math string."""
    toks = [t for t in _tokens(s)]
    out: list[str] = []
    i = 0
    prev_kind = None
    while i < len(toks):
        kind, val = toks[i]
        if kind == "ws":
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if len(val) >= 2:
                out.append(r"\quad ")
            elif nxt and ((prev_kind in ("ident", "num", "str", "code", "close") and nxt[0] in ("ident", "num",
                                                                                                "str", "code"))
                          or (out and out[-1].endswith("}") and out[-1].startswith((r"\text", r"\texttt")))
                          or (nxt[0] == "ident" and _is_prose_word(nxt[1]))):
                out.append(r"\ ")
            i += 1
            continue
        if kind == "code":
            out.append(rf"\texttt{{{text_escape(val.strip('`'))}}}")
        elif kind == "str":
            out.append(rf"\text{{{text_escape(val)}}}")
        elif kind == "num":
            out.append(val)
        elif kind == "ident":
            base = val.partition("_")[0]
            nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
            if base == "sqrt" and nxt == "(" and (j := _group(toks, i + 1)) is not None:
                out.append(rf"\sqrt{{{to_latex(''.join(v for _, v in toks[i + 2:j]))}}}")
                i, prev_kind = j + 1, "close"
                continue
            tex = _ident(val)
            if nxt == "~":
                tex = rf"\tilde{{{tex}}}"
                i += 1
            out.append(tex)
        elif val in ("^", "**"):
            nxt = toks[i + 1] if i + 1 < len(toks) else ("op", "")
            if nxt[1] == "(" and (j := _group(toks, i + 1)) is not None:
                out.append(f"^{{{to_latex(''.join(v for _, v in toks[i + 2:j]))}}}")
                i, prev_kind = j + 1, "close"
                continue
            if nxt[0] in ("ident", "num"):
                out.append("^{" + (r"\top" if nxt[1] == "T" else _ident(nxt[1]) if nxt[0] == "ident" else nxt[1]) + "}")
                i, prev_kind = i + 2, "ident"
                continue
            out.append(r"\hat{\ }")
        elif ord(val[0]) > 127:
            out.append(rf"\text{{{val}}}")
        else:
            op = _OPS.get(val, val)
            out.append(op + " " if op[-1].isalpha() else op)
        prev_kind = "close" if val in (")", "]") else kind
        i += 1
    return "".join(out).strip()


def is_formula(segment: str) -> bool:
    """True when ``segment`` reads as a formula rather than as a sentence."""
    if not _SIGNS.search(segment.replace("``", "")):
        return False
    code_free = re.sub(r"``.+?``|`[^`]+`|\"[^\"]*\"", " ", segment)
    words = re.findall(r"[A-Za-z][A-Za-z0-9_']*", code_free)
    if not words or re.match(r"\s*[A-Za-z][A-Za-z0-9_']*(?:_\{[^{}]*\})?\s*=[^=]", code_free):
        return True
    prose = sum(_is_prose_word(w) for w in words)
    return prose <= 2 or prose / len(words) < 0.5


_MD_PUNCT = re.compile(r"([\\`*_{}\[\]()#+\-.!<>|~$&:\"'=^%@;,/?])")


def prose_to_myst(s: str) -> str:
    """Prose with ``code`` spans, escaped for MyST Markdown (code spans stay code)."""
    parts = re.split(r"(``.+?``)", s)
    out = []
    for p in parts:
        if p.startswith("``") and p.endswith("``") and len(p) > 4:
            out.append("`" + p[2:-2] + "`")
        else:
            out.append(_MD_PUNCT.sub(r"\\\1", p))
    return "".join(out)


def _prose_run(seg: str, n: int = 3) -> int | None:
    """Where the first run of ``n`` consecutive English words starts in ``seg`` (outside code spans)."""
    masked = re.sub(r"``.+?``|`[^`]+`|\"[^\"]*\"", lambda m: "#" * len(m.group()), seg)
    run: list[re.Match] = []
    for m in re.finditer(r"[A-Za-z][A-Za-z0-9_']*", masked):
        if _is_prose_word(m.group()) and (not run or masked[run[-1].end():m.start()].isspace()):
            run.append(m)
            if len(run) == n:
                return run[0].start()
        else:
            run = [m] if _is_prose_word(m.group()) else []
    return None


def segment_to_myst(seg: str) -> str:
    """One segment: a formula as a ``{math}`` role, prose escaped; a sentence that opens or ends a formula
    ("channels last: x (N, C)", "y = x W + b over the last axes") is split so that only the formula is math."""
    if not is_formula(seg):
        return prose_to_myst(seg)
    head, colon, tail = seg.partition(": ")
    if colon and not _SIGNS.search(head) and is_formula(tail):
        return prose_to_myst(head + ":") + " " + segment_to_myst(tail)
    cut = _prose_run(seg)
    if cut and is_formula(seg[:cut]) and not seg[:cut].rstrip().endswith("sum"):   # "sum over rows of dy" is math
        return segment_to_myst(seg[:cut].rstrip()) + " " + segment_to_myst(seg[cut:])
    tex = to_latex(seg)
    return "{math}`" + tex.replace("`", "'") + "`" if tex else ""


def line_to_myst(line: str) -> str:
    """One docstring line: formula segments as ``{math}`` roles, the rest as escaped prose."""
    segments = re.split(r"(\s{3,})", line.strip())
    return "".join("&emsp;&emsp;" if not seg.strip() else segment_to_myst(seg) for seg in segments)


def docstring_to_myst(doc: str | None) -> str:
    """A whole plain-text docstring as MyST Markdown: lines kept (hard breaks), indentation as em spaces."""
    if not doc:
        return ""
    first, _, rest = doc.strip("\n").partition("\n")
    lines = [first.strip()] + textwrap.dedent(rest).splitlines()
    blocks: list[list[str]] = [[]]
    for ln in lines:
        if not ln.strip():
            if blocks[-1]:
                blocks.append([])
            continue
        indent = (len(ln) - len(ln.lstrip())) // 4
        blocks[-1].append("&emsp;&emsp;" * indent + line_to_myst(ln))
    return "\n\n".join(" \\\n".join(b) for b in blocks if b) + "\n"
