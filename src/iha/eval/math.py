"""MATH-500: loader, prompts, ``\\boxed{}`` extraction and answer equivalence.

``is_equiv(a, b)`` first compares the two answers as strings after the standard MATH
normalisation (:func:`normalize_answer`), then, when both convert to sympy expressions, compares
them symbolically by numeric evaluation (at random points when they contain symbols).

The sympy step is defended against hostile or pathological model output: the LaTeX is turned
into a restricted Python expression by our own converter (only digits, operators, brackets and
the names ``sqrt``, ``pi``, ``oo`` and single-letter symbols are allowed, so nothing else can
reach ``parse_expr``), parsed without evaluation, and rejected when it is too long or holds huge
numbers or large or nested powers; evaluation then also runs under a wall-clock alarm where the
platform allows (the main thread on Unix). Anything that fails any of these is simply "not
equivalent by sympy".
"""

from __future__ import annotations

import cmath
import contextlib
import keyword
import random
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from iha.eval.data import check_limit, load_hub_dataset, read_jsonl

HUB_NAME = "HuggingFaceH4/MATH-500"

CHAT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class MathProblem:
    """One problem: the statement and the reference final answer (LaTeX, unnormalised)."""

    problem: str
    answer: str
    subject: str = ""
    level: int | str = ""
    unique_id: str = ""


def load_math500(
    path: str | Path | None = None, split: str = "test", limit: int | None = None
) -> list[MathProblem]:
    """MATH-500 problems from a local JSONL file, else from the hub (``HuggingFaceH4/MATH-500``).

    Records need ``problem`` and either ``answer`` or a ``solution`` holding a ``\\boxed{}``.
    """
    check_limit(limit)
    if path is not None:
        records = read_jsonl(path, required=("problem",))
    else:
        records = load_hub_dataset(HUB_NAME, split=split, required=("problem",))
    problems = []
    for i, r in enumerate(records[:limit] if limit else records):
        answer = r.get("answer")
        if answer is None and "solution" in r:
            answer = extract_boxed(r["solution"])
        if answer is None:
            raise ValueError(f"record {i}: needs an 'answer' or a 'solution' with \\boxed{{}}")
        problems.append(
            MathProblem(
                problem=r["problem"],
                answer=str(answer),
                subject=r.get("subject", ""),
                level=r.get("level", ""),
                unique_id=str(r.get("unique_id", i)),
            )
        )
    return problems


# Few-shot exemplars written for this project (not dataset items), Minerva-style.
FEWSHOT_EXEMPLARS: tuple[tuple[str, str, str], ...] = (
    (
        "What is the value of $3^2 + 4^2$?",
        "We have $3^2 = 9$ and $4^2 = 16$, so the sum is $9 + 16 = 25$.",
        "25",
    ),
    (
        "Solve for $x$: $5x - 7 = 18$.",
        "Adding 7 to both sides gives $5x = 25$, and dividing by 5 gives $x = 5$.",
        "5",
    ),
    (
        "Simplify $\\frac{6}{8} + \\frac{1}{4}$.",
        "We have $\\frac{6}{8} = \\frac{3}{4}$, so the sum is $\\frac{3}{4} + \\frac{1}{4} = 1$.",
        "1",
    ),
    (
        "What is the area of a circle with diameter 10?",
        "The radius is $10/2 = 5$, so the area is $\\pi \\cdot 5^2 = 25\\pi$.",
        "25\\pi",
    ),
    (
        "How many positive divisors does 12 have?",
        "The divisors of 12 are 1, 2, 3, 4, 6 and 12, so there are 6 of them.",
        "6",
    ),
)


def fewshot_prompt(problem: str, n_shots: int = 5) -> str:
    """Minerva-style few-shot prompt: ``Problem:\\n...\\n\\nSolution: ... \\boxed{..}``."""
    if not 0 <= n_shots <= len(FEWSHOT_EXEMPLARS):
        raise ValueError(f"n_shots={n_shots} must be in [0, {len(FEWSHOT_EXEMPLARS)}]")
    parts = [
        f"Problem:\n{q}\n\nSolution: {s} The final answer is $\\boxed{{{a}}}$.\n\n"
        for q, s, a in FEWSHOT_EXEMPLARS[:n_shots]
    ]
    parts.append(f"Problem:\n{problem}\n\nSolution:")
    return "".join(parts)


STOP_STRINGS = ("\n\nProblem:",)


def chat_messages(problem: str) -> list[dict[str, str]]:
    """One user turn: the problem and the instruction to box the final answer."""
    return [{"role": "user", "content": f"{problem}\n{CHAT_INSTRUCTION}"}]


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced.

    Also accepts the brace-less form ``\\boxed 5`` (content up to whitespace or ``$``).
    None when there is no complete box.
    """
    starts = [m for m in re.finditer(r"\\(?:boxed|fbox)(?![a-zA-Z])", text)]
    for m in reversed(starts):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j]
            continue  # unbalanced: try an earlier box
        if i > m.end():  # "\boxed 5"
            rest = re.match(r"[^\s$]+", text[i:])
            if rest:
                return rest.group()
    return None


def extract_math_answer(text: str) -> str | None:
    """The model's final answer: the last ``\\boxed{}``, else "final answer is $X$", else None."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed
    m = re.findall(r"final answer is\s*\$([^$]+)\$", text, flags=re.IGNORECASE)
    return m[-1].strip() if m else None


# ---------------------------------------------------------------- normalisation


def _fix_fracs(s: str) -> str:
    r"""``\frac12`` -> ``\frac{1}{2}``, ``\frac1{72}`` -> ``\frac{1}{72}``, ``\frac{a}b`` ->
    ``\frac{a}{b}``: a brace-less argument is one character."""
    out = []
    i = 0
    while i < len(s):
        if s.startswith("\\frac", i):
            out.append("\\frac")
            i += 5
            for _ in range(2):
                if i >= len(s):
                    break
                if s[i] == "{":
                    depth, j = 0, i
                    while j < len(s):
                        depth += s[j] == "{"
                        depth -= s[j] == "}"
                        if depth == 0:
                            break
                        j += 1
                    out.append(s[i : j + 1])
                    i = j + 1
                elif s[i] == "\\":  # a command argument such as \pi: leave as is
                    break
                else:
                    out.append("{" + s[i] + "}")
                    i += 1
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _fix_sqrt(s: str) -> str:
    r"""``\sqrt3`` -> ``\sqrt{3}`` (a brace-less argument is one character)."""
    return re.sub(r"\\sqrt(?![\[{a-zA-Z])(\S)", r"\\sqrt{\1}", s)


def _fix_a_slash_b(s: str) -> str:
    r"""``3/4`` (integers only) -> ``\frac{3}{4}``."""
    m = re.fullmatch(r"(-?\d+)/(\d+)", s)
    return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}" if m else s


def _remove_text_units(s: str) -> str:
    r"""Drop a trailing ``\text{...}`` / ``\mbox{...}`` unit after a value (``10\text{ cm}`` ->
    ``10``); unwrap a ``\text{...}`` that is the whole answer (``\text{(B)}`` -> ``(B)``)."""
    m = re.fullmatch(r"(.+?)\s*\\(?:text|mbox|textbf|mathrm)\{[^{}]*\}\s*", s)
    if m and re.search(r"[\d}]\s*$", m.group(1)):
        s = m.group(1)
    return re.sub(r"\\(?:text|mbox|textbf|mathrm)\{([^{}]*)\}", r"\1", s)


def normalize_answer(s: str) -> str:
    r"""The standard MATH answer normalisation (Hendrycks et al.), in this order:

    newlines and ``\!`` removed, ``\\`` -> ``\``, ``\dfrac``/``\tfrac`` -> ``\frac``,
    ``\left``/``\right`` removed, degrees (``^\circ``, ``^{\circ}``) removed, ``\$`` and ``$``
    removed, units in ``\text{}`` removed (a lone ``\text{X}`` is unwrapped), ``\%`` and ``%``
    removed, a leading ``.`` or `` .``/``{.`` gets its ``0``, an ``x = `` prefix (a left side of
    at most two characters) dropped, ``\sqrt3`` -> ``\sqrt{3}``, all spaces removed,
    ``\frac12`` -> ``\frac{1}{2}``, ``0.5`` -> ``\frac{1}{2}``, integer ``a/b`` -> ``\frac{a}{b}``,
    and a trailing period dropped. Beyond the standard list: thousands separators in a plain
    number are removed (``1,000`` -> ``1000``).
    """
    s = s.replace("\n", "").replace("\\!", "")
    s = s.replace("\\\\", "\\")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\left(?![a-zA-Z])", "", s)
    s = re.sub(r"\\right(?![a-zA-Z])", "", s)
    s = s.replace("^{\\circ}", "").replace("^\\circ", "")
    s = s.replace("\\$", "").replace("$", "")
    s = _remove_text_units(s.strip())
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    s = s.strip()
    if s.startswith("."):
        s = "0" + s
    parts = s.split("=")
    if len(parts) == 2 and len(parts[0].strip()) <= 2:
        s = parts[1]
    s = _fix_sqrt(s)
    s = s.replace(" ", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = _fix_fracs(s)
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):  # thousands separators: 1,000 -> 1000
        s = s.replace(",", "")
    if s == "0.5":
        s = "\\frac{1}{2}"
    s = _fix_a_slash_b(s)
    if s.endswith(".") and not s.endswith("\\."):
        s = s[:-1]
    return s


# ---------------------------------------------------------------- sympy comparison

_MAX_CHARS = 120
_MAX_DIGITS = 40
_MAX_EXPONENT = 100


def _read_group(s: str, i: int) -> tuple[str, int]:
    """The content of the brace group starting at s[i] == '{', and the index after it."""
    if i >= len(s) or s[i] != "{":
        raise ValueError("expected '{'")
    depth = 0
    for j in range(i, len(s)):
        depth += s[j] == "{"
        depth -= s[j] == "}"
        if depth == 0:
            return s[i + 1 : j], j + 1
    raise ValueError("unbalanced braces")


def _latex_to_python(s: str) -> str:
    """A normalised LaTeX answer -> a restricted Python expression (ValueError if unsupported)."""
    out = []
    i = 0
    while i < len(s):
        if s.startswith("\\frac", i):
            num, i = _read_group(s, i + 5)
            den, i = _read_group(s, i)
            out.append(f"(({_latex_to_python(num)})/({_latex_to_python(den)}))")
        elif s.startswith("\\sqrt", i):
            i += 5
            if i < len(s) and s[i] == "[":
                j = s.index("]", i)
                root = _latex_to_python(s[i + 1 : j])
                arg, i = _read_group(s, j + 1)
                out.append(f"(({_latex_to_python(arg)})**(1/({root})))")
            else:
                arg, i = _read_group(s, i)
                out.append(f"sqrt({_latex_to_python(arg)})")
        elif s.startswith("\\pi", i):
            out.append(" pi ")
            i += 3
        elif s.startswith("\\infty", i):
            out.append(" oo ")
            i += 6
        elif s.startswith("\\cdot", i) or s.startswith("\\times", i):
            out.append("*")
            i += 5 if s.startswith("\\cdot", i) else 6
        elif s[i] == "\\":
            raise ValueError(f"unsupported command at {s[i : i + 10]!r}")
        elif s[i] == "{":
            out.append("(")
            i += 1
        elif s[i] == "}":
            out.append(")")
            i += 1
        else:
            out.append(s[i])
            i += 1
    expr = "".join(out)
    if re.search(r"[^0-9a-zA-Z+\-*/^().,\s]", expr):
        raise ValueError("unsupported characters")
    if re.search(r"\.\s*[a-zA-Z]", expr):
        raise ValueError("attribute access")
    for name in re.findall(r"[a-zA-Z]+", expr):
        # letter runs other than the allowed names are split into single-letter symbols
        if keyword.iskeyword(name):
            raise ValueError(f"unsupported name {name!r}")
    return expr


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError after ``seconds`` (main thread on Unix only; elsewhere no limit).

    An alarm already pending (pytest-timeout's, for one) is put back afterwards with the time
    it had left, so this never cancels someone else's timer.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def on_alarm(signum, frame):  # noqa: ARG001
        raise TimeoutError("sympy comparison timed out")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    start = time.monotonic()
    pending, _ = signal.getitimer(signal.ITIMER_REAL)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, pending) if pending > 0 else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if pending > 0:
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, pending - (time.monotonic() - start)))


def _to_sympy(s: str):  # -> sympy.Basic | tuple, or raises
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    if len(s) > _MAX_CHARS:
        raise ValueError("too long")
    py = _latex_to_python(s)
    local_dict = {n: sympy.Symbol(n) for n in re.findall(r"\b[a-zA-Z]\b", py)}
    local_dict.update({"sqrt": sympy.sqrt, "pi": sympy.pi, "oo": sympy.oo})
    # only what the parser's own transformations emit; no builtins, nothing else callable
    global_dict = {"__builtins__": {}}
    for name in ("Integer", "Float", "Rational", "Symbol", "Add", "Mul", "Pow"):
        global_dict[name] = getattr(sympy, name)
    transformations = standard_transformations + (
        implicit_multiplication_application,
        convert_xor,
    )
    expr = parse_expr(
        py,
        local_dict=local_dict,
        global_dict=global_dict,
        transformations=transformations,
        evaluate=False,
    )
    tree = sympy.Tuple(*expr) if isinstance(expr, tuple) else expr
    # bottom-up, so that an exponent is only evaluated once its own powers are known small
    for node in sympy.postorder_traversal(tree):
        if isinstance(node, sympy.Integer) and len(str(abs(int(node)))) > _MAX_DIGITS:
            raise ValueError("number too large")
        if isinstance(node, sympy.Pow):
            if not node.exp.is_number:
                raise ValueError("symbolic exponent")
            if not abs(complex(node.exp.evalf(15))) <= _MAX_EXPONENT:
                raise ValueError("exponent too large")
    return expr


def _numerically_equal(a, b, rng: random.Random) -> bool:
    import sympy

    if isinstance(a, tuple) or isinstance(b, tuple):
        if not (isinstance(a, tuple) and isinstance(b, tuple)) or len(a) != len(b):
            return False
        return all(_numerically_equal(x, y, rng) for x, y in zip(a, b))
    diff = sympy.sympify(a) - sympy.sympify(b)
    symbols = sorted(diff.free_symbols, key=lambda s: s.name)
    points = (
        [{}]
        if not symbols
        else [
            {s: sympy.Rational(rng.randint(1, 97), rng.randint(1, 13)) for s in symbols}
            for _ in range(4)
        ]
    )
    for point in points:
        ref = complex(sympy.sympify(a).subs(point).evalf(30))
        val = complex(diff.subs(point).evalf(30))
        if not (cmath.isfinite(ref) and cmath.isfinite(val)):
            return False  # infinities and nan are only equal as strings
        if not abs(val) <= 1e-9 * max(1.0, abs(ref)):
            return False
    return True


def sympy_equiv(a: str, b: str, timeout: float = 2.0) -> bool:
    """True when both normalised answers convert to sympy and agree numerically.

    Expressions with symbols are compared at four random rational points (seeded from the two
    strings, so the verdict is deterministic). False whenever sympy is missing, either side is
    unsupported, or the comparison exceeds ``timeout`` seconds.
    """
    try:
        import sympy  # noqa: F401
    except ImportError:
        return False
    try:
        with _time_limit(timeout):
            ea, eb = _to_sympy(a), _to_sympy(b)
            return _numerically_equal(ea, eb, random.Random(f"{a}\x00{b}"))
    except Exception:  # any parse/evaluation failure or timeout means "not shown equal"
        return False


def is_equiv(a: str | None, b: str | None, use_sympy: bool = True) -> bool:
    """Are two MATH answers the same? Normalised string equality, else sympy equivalence.

    None on either side is never equivalent.
    """
    if a is None or b is None:
        return False
    na, nb = normalize_answer(a), normalize_answer(b)
    if na == nb:
        return True
    return use_sympy and sympy_equiv(na, nb)
