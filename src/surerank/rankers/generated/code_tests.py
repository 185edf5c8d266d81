"""Tests available at inference time: the examples a code prompt's docstring gives, and inputs derived from them.

Only what a user has when the candidates are generated is read here — the prompt's own examples, tests the user
passes, inputs made by perturbing example inputs — never hidden tests.  Examples come in the formats HumanEval-like
prompts use: doctest (``>>> f(1)`` then the value), ``f(1) == 2`` / ``f(1) => 2`` / ``f(1) ➞ 2`` / ``f(1) -> 2``,
and ``Input: a = 1, b = 2`` followed by ``Output: 3``.
"""

from __future__ import annotations

import ast
import doctest
import re
from dataclasses import dataclass

_ARROW = re.compile(r"^\s*(?P<call>[A-Za-z_]\w*\(.*\))\s*(?:==|=>|➞|->|returns|should return)\s*(?P<value>.+?)\s*$")
_INPUT = re.compile(r"^\s*Input\s*:\s*(?P<args>.+?)\s*$", re.IGNORECASE)
_OUTPUT = re.compile(r"^\s*Output\s*:\s*(?P<value>.+?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class CodeTest:
    """One call of the entry point; ``expected`` (a Python literal, as source) when the prompt gives it."""

    call: str
    expected: str | None = None
    source: str = "docstring"


def _literal(text: str) -> str | None:
    text = "\n".join(line for line in text.strip().splitlines() if line.strip() not in ('"""', "'''"))
    text = text.strip().rstrip(".,;")
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return text


def is_literal_call(text: str, entry_point: str) -> bool:
    """``text`` is one call of ``entry_point`` whose arguments are all Python literals."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return False
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry_point):
        return False
    try:  # only literal arguments: `is_happy(a)` in a docstring means the string "a", not a variable
        for arg in [*node.args, *(k.value for k in node.keywords)]:
            ast.literal_eval(arg)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def docstring_examples(prompt: str, entry_point: str) -> list[CodeTest]:
    """The prompt's worked examples for ``entry_point``, each with its expected value where one parses."""
    tests: list[CodeTest] = []
    seen: set[str] = set()

    def add(call: str, expected: str | None) -> None:
        call = call.strip()
        if call not in seen and is_literal_call(call, entry_point):
            seen.add(call)
            tests.append(CodeTest(call, expected))

    try:
        examples = doctest.DocTestParser().get_examples(prompt)
    except ValueError:  # inconsistent indentation in a docstring: fall back to the line patterns
        examples = []
    for example in examples:
        # doctest's "want" runs to the next blank line, so prose after the value may ride along: try the first line
        want = example.want.strip()
        add(example.source, (_literal(want) or _literal(want.splitlines()[0])) if want else None)
    lines = prompt.splitlines()
    for position, line in enumerate(lines):
        if line.lstrip().startswith(">>>"):
            continue
        match = _ARROW.match(line)
        if match:
            add(match["call"], _literal(match["value"]))
            continue
        match = _INPUT.match(line)
        if match:
            call = f"{entry_point}({match['args']})"
            expected = None
            for following in lines[position + 1: position + 4]:
                out = _OUTPUT.match(following)
                if out:
                    expected = _literal(out["value"])
                    break
            add(call, expected)
    return tests


def perturbed_inputs(tests: list[CodeTest], entry_point: str, limit: int = 8) -> list[CodeTest]:
    """More inputs of the same types as the examples' (no expected values): a wider net for output agreement.

    Integers are shifted by one, strings and lists reversed and shortened; deterministic, so a rerun selects
    the same candidate.
    """
    made: list[CodeTest] = []
    seen = {t.call for t in tests}
    for test in tests:
        node = ast.parse(test.call, mode="eval").body
        assert isinstance(node, ast.Call)
        for variant in _variants(node):
            call = ast.unparse(variant)
            if call not in seen and is_literal_call(call, entry_point):
                seen.add(call)
                made.append(CodeTest(call, None, source="perturbed"))
            if len(made) >= limit:
                return made
    return made


def _variants(call: ast.Call) -> list[ast.Call]:
    out = []
    for position, arg in enumerate(call.args):
        try:
            value = ast.literal_eval(arg)
        except (ValueError, SyntaxError, TypeError):
            continue
        for new in _perturb(value):
            args = list(call.args)
            args[position] = ast.parse(repr(new), mode="eval").body
            out.append(ast.Call(func=call.func, args=args, keywords=call.keywords))
    for position, keyword in enumerate(call.keywords):
        try:
            value = ast.literal_eval(keyword.value)
        except (ValueError, SyntaxError, TypeError):
            continue
        for new in _perturb(value):
            keywords = list(call.keywords)
            keywords[position] = ast.keyword(arg=keyword.arg, value=ast.parse(repr(new), mode="eval").body)
            out.append(ast.Call(func=call.func, args=call.args, keywords=keywords))
    return out


def _perturb(value: object) -> list[object]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1] if abs(value) < 10**6 else []
    if isinstance(value, float):
        return [value + 0.5]
    if isinstance(value, str):
        return [value[::-1], value[:-1]] if len(value) > 1 else [value + "a"]
    if isinstance(value, list):
        return [value[::-1], value[:-1]] if len(value) > 1 else []
    return []
