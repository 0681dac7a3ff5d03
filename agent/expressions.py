"""Expressions over tags: the grammar of a computed tag's ``expr``, its parser, and the compiler
that turns every expression of a config into one flat program for the evaluation kernel
(detectors.expr, one call per batch for all of them).

Functional core: text in, programs out; no I/O, no clock. Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]      (one comparison, not a chain)
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | "+" unary | atom
    atom    := NUMBER | NAME | 'tag("' any name '")' | FUNCTION "(" expr ("," expr)* ")" | "(" expr ")"

A NAME is a tag name made of letters, digits, ``_`` and ``.``, not starting with a digit or a
dot (``CW.FI01``); any other name is written ``tag("A-B 1")``. Comparisons and and/or/not give
1.0 (true) or 0.0 (false); and/or/not treat any non-zero value as true.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from detectors.expr import FUNCTIONS, OPS, WINDOW_FUNCTIONS

COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
_BINARY = {"+": "ADD", "-": "SUB", "*": "MUL", "/": "DIV", "<": "LT", "<=": "LE", ">": "GT", ">=": "GE",
           "==": "EQ", "!=": "NE", "and": "AND", "or": "OR"}
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[^\W\d][\w.]*)
  | (?P<op><=|>=|==|!=|[-+*/<>(),])
""", re.VERBOSE)
_WORDS = ("and", "or", "not")


class ExprError(ValueError):
    """The expression cannot be compiled; the message says where (``at position N``) and why."""


@dataclass(frozen=True)
class Node:
    """One node of a parsed expression: ``kind`` is num, ref, neg, not, bin or call."""

    kind: str
    pos: int  # 1-based column in the expression text
    value: float = 0.0  # num
    name: str = ""  # ref: the tag name; bin: the operator; call: the function
    args: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Expr:
    """A parsed expression: its text, tree, the tag names it refers to, and whether its result
    is a truth value (a comparison or and/or/not at the top)."""

    text: str
    root: Node
    names: tuple[str, ...]
    boolean: bool


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise ExprError(f"syntax error at position {i + 1}: unexpected {text[i]!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            word = m.group()
            out.append(("op" if word in _WORDS else kind, word, i + 1))
        i = m.end()
    out.append(("end", "", len(text) + 1))
    return out


class _Parser:
    def __init__(self, text: str):
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self, word: str | None = None) -> tuple[str, str, int]:
        tok = self.toks[self.i]
        if word is not None and tok[1] != word:
            raise self.unexpected(tok, f"expected {word!r}")
        self.i += 1
        return tok

    @staticmethod
    def unexpected(tok: tuple[str, str, int], hint: str = "") -> ExprError:
        what = "end of expression" if tok[0] == "end" else repr(tok[1])
        return ExprError(f"syntax error at position {tok[2]}: unexpected {what}" + (f" ({hint})" if hint else ""))

    def binary(self, words: Sequence[str], operand) -> Node:
        left = operand()
        while self.peek()[1] in words and self.peek()[0] == "op":
            _, word, pos = self.take()
            left = Node("bin", pos, name=word, args=(left, operand()))
        return left

    def expr(self) -> Node:
        return self.binary(("or",), lambda: self.binary(("and",), self.negation))

    def negation(self) -> Node:
        if self.peek()[1] == "not":
            pos = self.take()[2]
            return Node("not", pos, args=(self.negation(),))
        left = self.sum()
        if self.peek()[1] in COMPARISONS:
            _, word, pos = self.take()
            left = Node("bin", pos, name=word, args=(left, self.sum()))
            if self.peek()[1] in COMPARISONS:
                raise self.unexpected(self.peek(), "combine comparisons with and")
        return left

    def sum(self) -> Node:
        return self.binary(("+", "-"), lambda: self.binary(("*", "/"), self.unary))

    def unary(self) -> Node:
        kind, word, pos = self.peek()
        if word in ("-", "+") and kind == "op":
            self.take()
            inner = self.unary()
            return inner if word == "+" else Node("neg", pos, args=(inner,))
        return self.atom()

    def atom(self) -> Node:
        kind, word, pos = self.take()
        if kind == "number":
            return Node("num", pos, value=float(word))
        if word == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if kind != "name":
            raise self.unexpected(self.toks[self.i - 1])
        if self.peek()[1] != "(":
            return Node("ref", pos, name=word)
        self.take("(")
        if word == "tag":
            s = self.take()
            if s[0] != "string":
                raise self.unexpected(s, 'tag("name") takes the name in quotes')
            self.take(")")
            return Node("ref", pos, name=re.sub(r"\\(.)", r"\1", s[1][1:-1]))
        args = [self.expr()]
        while self.peek()[1] == ",":
            self.take()
            args.append(self.expr())
        self.take(")")
        return _call(word, pos, tuple(args))


def _call(fn: str, pos: int, args: tuple[Node, ...]) -> Node:
    """A function call, its name and argument count checked."""
    if fn not in FUNCTIONS:
        close = difflib.get_close_matches(fn, FUNCTIONS, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ExprError(f"unknown function {fn!r} at position {pos}{hint} "
                        f"(functions: {', '.join(FUNCTIONS)})")
    low, high = FUNCTIONS[fn]
    if not low <= len(args) <= high:
        want = f"{low}" if low == high else f"at least {low}"
        raise ExprError(f"{fn}() at position {pos} takes {want} argument{'s' if low != 1 else ''}, "
                        f"not {len(args)}")
    if fn in WINDOW_FUNCTIONS:
        w = args[1]
        if w.kind != "num" or not w.value > 0:
            raise ExprError(f"{fn}() at position {pos}: the window (seconds) must be a positive number, "
                            f"not an expression or a value <= 0")
    return Node("call", pos, name=fn, args=args)


def parse(text: str) -> Expr:
    """Parse an expression; ExprError on bad syntax, an unknown function or wrong arguments."""
    if not text.strip():
        raise ExprError("must not be empty")
    parser = _Parser(text)
    root = parser.expr()
    if parser.peek()[0] != "end":
        raise parser.unexpected(parser.peek())
    names: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.kind == "ref" and node.name not in names:
            names.append(node.name)
        stack.extend(reversed(node.args))
    boolean = root.kind == "not" or (root.kind == "bin" and root.name in (*COMPARISONS, "and", "or"))
    return Expr(text, root, tuple(names), boolean)


@dataclass(frozen=True)
class Program:
    """One expression compiled for the kernel: postfix code of (opcode, argument, constant)
    writing tag ``out``. The argument is a tag index (TAG), a count (MIN/MAX/SUM/MEAN) or a
    window number within the program (window functions, seconds in ``windows``)."""

    out: int
    code: tuple[tuple[int, int, float], ...]
    windows: tuple[float, ...]
    inputs: tuple[int, ...]  # the tags it reads directly, in first-use order
    depth: int  # stack slots it needs


def compile_expr(expr: Expr, index: Mapping[str, int], out: int) -> Program:
    """The expression's program; every name must be in ``index`` (checked by the caller)."""
    code: list[tuple[int, int, float]] = []
    windows: list[float] = []
    inputs: list[int] = []

    def emit(node: Node) -> int:  # returns the stack depth the node needs
        if node.kind == "num":
            code.append((OPS["CONST"], 0, node.value))
            return 1
        if node.kind == "ref":
            tag = index[node.name]
            if tag not in inputs:
                inputs.append(tag)
            code.append((OPS["TAG"], tag, 0.0))
            return 1
        if node.kind in ("neg", "not"):
            d = emit(node.args[0])
            code.append((OPS["NEG" if node.kind == "neg" else "NOT"], 0, 0.0))
            return d
        if node.kind == "bin":
            d = max(emit(node.args[0]), 1 + emit(node.args[1]))
            code.append((OPS[_BINARY[node.name]], 0, 0.0))
            return d
        if node.name in WINDOW_FUNCTIONS:
            d = emit(node.args[0])
            windows.append(node.args[1].value)
            code.append((OPS[WINDOW_FUNCTIONS[node.name]], len(windows) - 1, 0.0))
            return d
        d = max(i + emit(a) for i, a in enumerate(node.args))
        code.append((OPS[node.name.upper()], len(node.args), 0.0))
        return d

    depth = emit(expr.root)
    return Program(out, tuple(code), tuple(windows), tuple(inputs), depth)


def dependency_order(refs: Mapping[str, Sequence[str]]) -> tuple[list[str], list[list[str]]]:
    """The computed tags in an order where each comes after the computed tags it refers to,
    and the cycles found (each as the names around it, first name repeated at the end).
    ``refs``: computed tag -> the names its expression refers to (other names are ignored)."""
    order: list[str] = []
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        path.append(name)
        for dep in refs[name]:
            if dep not in refs:
                continue
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[name] = 2
        order.append(name)

    for name in refs:
        if name not in state:
            visit(name, [])
    return order, cycles


@dataclass(frozen=True)
class Plan:
    """Every computed tag of a config, compiled: the programs in dependency order, the interval
    of each program's fastest input (sizing its windows), and the read tags each computed tag
    depends on, directly or through other computed tags."""

    programs: tuple[Program, ...] = ()
    intervals: tuple[float, ...] = ()
    sources: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.programs)

    def source_tags(self, tag: int) -> tuple[int, ...]:
        return self.sources.get(tag, ())


def plan(exprs: Mapping[str, Expr], index: Mapping[str, int], interval_of: Mapping[str, float]
         ) -> tuple[Plan, dict[str, str]]:
    """Compile the computed tags ``exprs`` (name -> parsed expression) over the tags ``index``
    (every tag name -> index). ``interval_of``: read tag -> its poll interval. Returns the plan
    and, per computed tag with a problem, the message (unknown name, self reference, cycle);
    the plan holds only the computed tags without one."""
    problems: dict[str, str] = {}
    for name, e in exprs.items():
        unknown = [n for n in e.names if n not in index]
        if name in e.names:
            problems[name] = "refers to itself"
        elif unknown:
            close = difflib.get_close_matches(unknown[0], list(index), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems[name] = f"unknown tag {unknown[0]!r}{hint}"
        elif not e.names:
            problems[name] = "refers to no tag: a computed tag is evaluated when one of its inputs has a sample"
    refs = {n: [r for r in e.names if r in exprs] for n, e in exprs.items() if n not in problems}
    order, cycles = dependency_order(refs)
    for cycle in cycles:
        problems.setdefault(cycle[0], "cycle " + " -> ".join(cycle))
    # a computed tag that reads a refused one is left out too (its message is the other's)
    for name in order:
        if name not in problems and any(r in problems for r in refs[name]):
            problems[name] = ""
    sources: dict[str, tuple[str, ...]] = {}
    for name in order:
        if name in problems:
            continue
        own: list[str] = []
        for r in exprs[name].names:
            for s in sources.get(r, (r,)):
                if s not in own:
                    own.append(s)
        sources[name] = tuple(own)
    programs = tuple(compile_expr(exprs[n], index, index[n]) for n in order if n not in problems)
    intervals = tuple(min((interval_of.get(s, 1.0) for s in sources[n]), default=1.0)
                      for n in order if n not in problems)
    by_index = {index[n]: tuple(index[s] for s in src) for n, src in sources.items()}
    return Plan(programs, intervals, by_index), {n: m for n, m in problems.items() if m}
