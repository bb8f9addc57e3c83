"""Metric names a PromQL expression refers to, found by a small tokenizer (not a full parser).

Used to check that dashboards and gates only query metrics that exist: the Grafana role's
dashboards against the list our Prometheus has (tests/unit/test_grafana_elk.py), and the same
extraction against a live Prometheus (``/api/v1/label/__name__/values``) on a lab.

    >>> sorted(metric_names('sum by (version) (rate(http_requests_total{status=~"5.."}[1m]))'))
    ['http_requests_total']

What counts as a metric name: an identifier (letters, digits, ``_`` and ``:``) that is not

- a function or aggregation (an identifier followed by ``(``, ``by`` or ``without``),
- a keyword (``and``, ``or``, ``unless``, ``bool``, ``offset``, ``atan2``, ``Inf``, ``NaN``;
  case-insensitive, as in PromQL),
- a label name: inside ``{...}`` matchers and in the lists after ``by``, ``without``, ``on``,
  ``ignoring``, ``group_left`` and ``group_right``,
- inside ``[...]`` (ranges and subqueries) or a string,
- a Grafana template variable (``$__rate_interval``, ``$version``, ``${version}``).

A selector written as ``{__name__="name"}`` counts too (exact match only; a regex cannot be
resolved to names). Unbalanced brackets and unterminated strings raise PromQLSyntaxError, so a
broken dashboard query fails a test instead of yielding a partial answer.
"""

from __future__ import annotations

import re

__all__ = ["PromQLSyntaxError", "metric_names"]


class PromQLSyntaxError(ValueError):
    """The expression is not even roughly PromQL (brackets or quotes do not match)."""


_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|`[^`]*`)
    | (?P<var>\$(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*))
    | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
                 (?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
    | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<punct>=~|!~|!=|==|>=|<=|.)
    """,
    re.VERBOSE,
)

# Keywords followed by a parenthesised list of label names.
_LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
_OPENING = {"(": ")", "[": "]", "{": "}"}
_CLOSING = {")", "]", "}"}


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens = []
    for match in _TOKEN.finditer(expr):
        kind = match.lastgroup or "punct"
        text = match.group()
        if kind in ("ws", "comment"):
            continue
        if kind == "punct" and text in {'"', "'", "`"}:
            raise PromQLSyntaxError(
                f"unterminated string starting at offset {match.start()} in {expr!r}"
            )
        tokens.append((kind, text))
    _check_balanced(tokens, expr)
    return tokens


def _check_balanced(tokens: list[tuple[str, str]], expr: str) -> None:
    stack: list[str] = []
    for kind, text in tokens:
        if kind != "punct":
            continue
        if text in _OPENING:
            stack.append(_OPENING[text])
        elif text in _CLOSING and (not stack or stack.pop() != text):
            raise PromQLSyntaxError(f"unbalanced {text!r} in {expr!r}")
    if stack:
        raise PromQLSyntaxError(f"missing {''.join(reversed(stack))!r} at the end of {expr!r}")


def _skip_group(tokens: list[tuple[str, str]], start: int) -> int:
    """Index just past the bracket group that opens at tokens[start]."""
    depth = 0
    for index in range(start, len(tokens)):
        kind, text = tokens[index]
        if kind != "punct":
            continue
        if text in _OPENING:
            depth += 1
        elif text in _CLOSING:
            depth -= 1
            if depth == 0:
                return index + 1
    return len(tokens)  # unreachable: _check_balanced ran first


def _name_matchers(tokens: list[tuple[str, str]]) -> set[str]:
    """Exact __name__ matchers inside one {...} group."""
    names = set()
    for index in range(len(tokens) - 2):
        (k1, t1), (k2, t2), (k3, t3) = tokens[index : index + 3]
        if k1 == "ident" and t1 == "__name__" and k2 == "punct" and t2 == "=" and k3 == "string":
            names.add(t3[1:-1])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names EXPR selects (see the module docstring for what is left out)."""
    tokens = _tokens(expr)
    names: set[str] = set()
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if kind == "punct" and text == "{":
            end = _skip_group(tokens, index)
            names |= _name_matchers(tokens[index + 1 : end - 1])
            index = end
            continue
        if kind == "punct" and text == "[":
            index = _skip_group(tokens, index)
            continue
        if kind == "ident":
            word = text.lower()
            if word in _LABEL_LIST_KEYWORDS:
                index = _skip_group(tokens, index + 1) if following == ("punct", "(") else index + 1
                continue
            # An aggregation's modifier may come first: sum by (job) (...).
            aggregation = following[0] == "ident" and following[1].lower() in {"by", "without"}
            if word not in _KEYWORDS and following != ("punct", "(") and not aggregation:
                names.add(text)
        index += 1
    return names
