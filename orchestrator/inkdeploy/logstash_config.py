"""A structural parser of Logstash pipeline configuration (no Logstash needed).

Checks what Logstash's own grammar checks about a pipeline's shape: sections (input, filter,
output), plugins and their attributes (strings, numbers, barewords, arrays, hashes, nested
plugins such as codecs), and conditionals (if / else if / else with selectors, strings, regexes,
comparisons, in / not in, and / or, !, parentheses). It does not know which plugins or options
exist. Used on the logstash role's rendered pipeline by tests/unit/test_grafana_elk.py and on the
file a lab host really has by tests/stack/test_observability_roles.py.

    >>> parse_logstash_config('input { beats { port => 5044 } } output { stdout { } }')
    {'input': ['beats'], 'output': ['stdout']}
"""

from __future__ import annotations

import re

__all__ = ["LogstashSyntaxError", "parse_logstash_config"]


class LogstashSyntaxError(ValueError):
    """The text is not a well-formed Logstash pipeline."""


class _LogstashParser:
    """Recursive descent over Logstash's config grammar: sections, plugins, attributes (strings,
    numbers, barewords, arrays, hashes, nested plugins), if/else if/else with conditions
    (selectors, strings, regexes after =~ and !~, comparisons, in / not in, and / or, !, parens).
    Comments and strings are skipped properly, so braces inside them do not count."""

    SECTIONS = ("input", "filter", "output")
    NAME = re.compile(r"[A-Za-z0-9_@.\-]+")
    SELECTOR = re.compile(r"(\[[^\[\]\n]+\])+")
    CONDITION_WORDS = frozenset({"and", "or", "xor", "nand", "in", "not"})
    OPERATORS = ("==", "!=", "<=", ">=", "=~", "!~", "<", ">", "!")

    def __init__(self, text):
        self.text = text
        self.pos = 0

    def error(self, message):
        line = self.text.count("\n", 0, self.pos) + 1
        raise LogstashSyntaxError(f"line {line}: {message}")

    def skip(self):
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char.isspace():
                self.pos += 1
            elif char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            else:
                return

    def at(self, token):
        self.skip()
        return self.text.startswith(token, self.pos)

    def expect(self, token):
        if not self.at(token):
            found = self.text[self.pos : self.pos + 20] or "the end"
            self.error(f"expected {token!r}, found {found!r}")
        self.pos += len(token)

    def name(self):
        self.skip()
        match = self.NAME.match(self.text, self.pos)
        if not match:
            self.error(f"expected a name, found {self.text[self.pos : self.pos + 20]!r}")
        self.pos = match.end()
        return match.group()

    def string(self):
        quote, start = self.text[self.pos], self.pos
        index = self.pos + 1
        while index < len(self.text):
            if self.text[index] == "\\":
                index += 2
                continue
            if self.text[index] == quote:
                self.pos = index + 1
                return self.text[start + 1 : index]
            index += 1
        self.pos = start
        self.error("unterminated string")
        return ""  # unreachable

    def config(self):
        sections: dict[str, list[str]] = {}
        self.skip()
        while self.pos < len(self.text):
            section = self.name()
            if section not in self.SECTIONS:
                self.error(f"{section!r} is not input, filter or output")
            self.expect("{")
            sections.setdefault(section, []).extend(self.block())
            self.skip()
        if not sections:
            self.error("no input, filter or output section")
        return sections

    def closed(self, missing):
        """True, and past it, at a closing brace; the error MISSING at the end of the text."""
        self.skip()
        if self.pos >= len(self.text):
            self.error(missing)
        if self.text[self.pos] == "}":
            self.pos += 1
            return True
        return False

    def key(self):
        """An attribute's or a hash entry's name: a string or a bareword."""
        if self.text[self.pos] in "\"'":
            self.string()
        else:
            self.name()

    def block(self):
        """Plugins (and conditionals) up to the closing brace; returns the plugin names."""
        plugins = []
        while not self.closed("missing '}'"):
            word = self.name()
            if word == "if":
                plugins += self.branch()
            elif word == "else":
                self.error("else without if")
            else:
                self.expect("{")
                self.attributes()
                plugins.append(word)
        return plugins

    def branch(self):
        plugins = []
        self.condition()
        self.expect("{")
        plugins += self.block()
        while self.at("else"):
            self.pos += len("else")
            if self.at("if") and not self.NAME.match(self.text, self.pos + 2):
                self.pos += len("if")
                self.condition()
                self.expect("{")
                plugins += self.block()
            else:
                self.expect("{")
                plugins += self.block()
                break
        return plugins

    def attributes(self):
        while not self.closed("missing '}' after the attributes"):
            self.key()
            self.expect("=>")
            self.value()

    def value(self):
        self.skip()
        char = self.text[self.pos : self.pos + 1]
        if char in ("'", '"'):
            self.string()
        elif char == "[":
            self.pos += 1
            if self.at("]"):
                self.pos += 1
                return
            while True:
                self.value()
                if self.at(","):
                    self.pos += 1
                    continue
                self.expect("]")
                return
        elif char == "{":
            self.pos += 1
            while not self.closed("missing '}' in a hash"):
                self.key()
                self.expect("=>")
                self.value()
                if self.at(","):
                    self.pos += 1
        elif char and (char.isalnum() or char in "_-"):
            self.name()
            if self.at("{"):  # a plugin as a value: codec => json { ... }
                self.pos += 1
                self.attributes()
        else:
            self.error(f"expected a value, found {self.text[self.pos : self.pos + 20]!r}")

    def condition(self):
        depth, operands, after_match = 0, 0, False
        while True:
            self.skip()
            if self.pos >= len(self.text):
                self.error("a condition without a block")
            char = self.text[self.pos]
            if char == "{":
                if depth:
                    self.error("'{' inside parentheses of a condition")
                if not operands:
                    self.error("empty condition")
                return
            if char == "}":
                self.error("'}' in a condition")
            if char in "\"'":
                self.string()
                operands += 1
            elif char == "/" and after_match:
                end = self.pos + 1
                while end < len(self.text) and self.text[end] != "/":
                    if self.text[end] == "\n":
                        self.error("unterminated regular expression")
                    end += 2 if self.text[end] == "\\" else 1
                if end >= len(self.text):
                    self.error("unterminated regular expression")
                self.pos = end + 1
                operands += 1
            elif char == "[":
                match = self.SELECTOR.match(self.text, self.pos)
                if match:
                    self.pos = match.end()
                else:
                    self.value()  # an array literal: [tags] vs ["a", "b"]
                operands += 1
            elif char == "(":
                depth += 1
                self.pos += 1
            elif char == ")":
                depth -= 1
                if depth < 0:
                    self.error("unbalanced ')' in a condition")
                self.pos += 1
            else:
                operator = next(
                    (op for op in self.OPERATORS if self.text.startswith(op, self.pos)), None
                )
                if operator:
                    self.pos += len(operator)
                    after_match = operator in ("=~", "!~")
                    continue
                word = self.name()
                if word not in self.CONDITION_WORDS and not re.fullmatch(r"-?\d+(\.\d+)?", word):
                    self.error(f"unexpected {word!r} in a condition")
                operands += word not in self.CONDITION_WORDS
            after_match = False


def parse_logstash_config(text: str) -> dict[str, list[str]]:
    """{section: [plugin names in order]}; raises LogstashSyntaxError naming the line."""
    return _LogstashParser(text).config()
