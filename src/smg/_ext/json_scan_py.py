"""Reference twin of ``json_scan.pyx``: where does one JSON value end in streamed text?

The tool parsers stream a call's arguments as the model writes them; they must know where the
arguments value ends without parsing it. :class:`JsonScanner` keeps the nesting depth, whether it
is inside a string and whether the last char was a backslash, so each delta is scanned once:

* leading whitespace is skipped; ``{``/``[`` open a container that ends when the depth returns to
  zero; ``"`` a string that ends at the next unescaped quote; anything else a scalar that ends
  before the first ``, } ]`` or whitespace (or at ``finish``);
* it is not a validator: malformed text just never ends, or ends where the brackets balance.

``feed`` returns the index just past the value's end in that delta, or -1. O(len(delta)).

:class:`BracketScanner` does the same for a Python list literal (the pythonic tool format,
``[f(a=1), g(b='x')]``): it starts at the opening bracket; ``(``, ``[``, ``{`` nest, ``'`` and
``"`` open strings with backslash escapes, and the literal ends where the depth returns to zero.
"""
from __future__ import annotations

_SCALAR_END = frozenset(",}] \t\r\n")


class JsonScanner:
    __slots__ = ("started", "depth", "in_string", "escape", "scalar", "done")

    def __init__(self) -> None:
        self.started = False
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.scalar = False
        self.done = False

    def feed(self, text: str) -> int:
        if self.done:
            return 0
        for i, c in enumerate(text):
            if not self.started:
                if c in " \t\r\n":
                    continue
                self.started = True
                if c in "{[":
                    self.depth = 1
                elif c == '"':
                    self.in_string = True
                else:
                    self.scalar = True
                continue
            if self.scalar:
                if c in _SCALAR_END:
                    self.done = True
                    return i
                continue
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif c == "\\":
                    self.escape = True
                elif c == '"':
                    self.in_string = False
                    if self.depth == 0:
                        self.done = True
                        return i + 1
                continue
            if c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
            elif c in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    return i + 1
        return -1


class BracketScanner:
    __slots__ = ("depth", "quote", "escape", "done")

    def __init__(self) -> None:
        self.depth = 0
        self.quote = ""  # the quote of the string being read
        self.escape = False
        self.done = False

    def feed(self, text: str) -> int:
        if self.done:
            return 0
        for i, c in enumerate(text):
            if self.quote:
                if self.escape:
                    self.escape = False
                elif c == "\\":
                    self.escape = True
                elif c == self.quote:
                    self.quote = ""
            elif c in "'\"":
                self.quote = c
            elif c in "[({":
                self.depth += 1
            elif c in "])}":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    return i + 1
        return -1
