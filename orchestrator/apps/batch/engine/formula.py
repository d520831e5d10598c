"""The formula language: a recursive-descent parser producing a typed AST.

Grammar, loosest binding first::

    formula    := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := sum [("<" | "<=" | ">" | ">=" | "==" | "!=") sum]
    sum        := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := "-" unary | lagged
    lagged     := primary ("[" or "]")*
    primary    := NUMBER | NAME | NAME "(" [or ("," or)*] ")" | "(" or ")"

A NAME is a column (open high low close volume), a job parameter (a
number) or, before "(", a function (see ``functions``). ``x[n]`` is any
numeric ``x`` as it was ``n`` bars ago (``shift(x, n)``): ``close >
close[1]``, ``close > highest(high, 20)[1]``. Every node is a number series
or a true/false series, checked while parsing: ``and`` needs conditions,
``<`` needs numbers, and the whole formula must be a condition. Arithmetic
on constants is folded, so ``sma(close, 2 * n)`` works with a parameter
``n``. Nothing here evaluates user text as Python.

Limits keep any formula harmless to the engine (which evaluates, renders
and pickles the tree recursively): at most ``MAX_LENGTH`` characters,
``MAX_NESTING`` levels of brackets, calls, lags and unary operators inside
one another, and ``MAX_NODES`` nodes (numbers, columns, operators, calls).
Each is a ``FormulaError`` naming the limit and where it was passed.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import NoReturn

from orchestrator.apps.batch.engine.functions import FUNCTIONS, FunctionSpec, describe_all
from orchestrator.apps.batch.engine.lexer import KEYWORDS, FormulaError, Token, TokenKind, tokenize

__all__ = [
    "COLUMN_NAMES",
    "MAX_LENGTH",
    "MAX_NESTING",
    "MAX_NODES",
    "Binary",
    "Call",
    "Column",
    "Formula",
    "Node",
    "Number",
    "Unary",
    "is_condition",
    "parse_formula",
    "render",
]

COLUMN_NAMES = ("open", "high", "low", "close", "volume")
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")
ARITHMETIC = ("+", "-", "*", "/")
MAX_LENGTH = 4000  # characters
MAX_NESTING = 32  # brackets, calls, lags, "not" and "-" inside one another
MAX_NODES = 256  # numbers, columns, operators and calls, defaults included


@dataclass(frozen=True, slots=True)
class Number:
    value: float
    position: int


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    position: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "-" or "not"
    operand: Node
    position: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # arithmetic, comparison, "and", "or"
    left: Node
    right: Node
    position: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    sources: tuple[Node, ...]
    params: tuple[float, ...]
    position: int

    @property
    def spec(self) -> FunctionSpec:
        return FUNCTIONS[self.name]


Node = Number | Column | Unary | Binary | Call


@dataclass(frozen=True, slots=True)
class Formula:
    """A parsed formula: picklable, small, evaluated by ``evaluate``."""

    text: str
    root: Node
    indicators: tuple[Call, ...]  # distinct numeric calls, in order of appearance


def is_condition(node: Node) -> bool:
    """True for true/false nodes, False for numbers."""
    if isinstance(node, Binary):
        return node.op not in ARITHMETIC
    if isinstance(node, Unary):
        return node.op == "not"
    if isinstance(node, Call):
        return node.spec.boolean
    return False


def render(node: Node) -> str:
    """Canonical text: defaults filled in, names lower case, fully bracketed."""
    if isinstance(node, Number):
        return _number(node.value)
    if isinstance(node, Column):
        return node.name
    if isinstance(node, Unary):
        return f"not {render(node.operand)}" if node.op == "not" else f"-{render(node.operand)}"
    if isinstance(node, Binary):
        return f"({render(node.left)} {node.op} {render(node.right)})"
    args = [_unbracket(render(source)) for source in node.sources]
    args += [_number(value) for value in node.params]
    return f"{node.name}({', '.join(args)})"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _unbracket(text: str) -> str:
    return text[1:-1] if text.startswith("(") and text.endswith(")") else text


def parse_formula(text: str, parameters: Mapping[str, float] | None = None) -> Formula:
    """Parse and type-check ``text``; ``FormulaError`` says what and where."""
    params = _check_parameters(parameters or {})
    if len(text) > MAX_LENGTH:
        raise FormulaError(
            f"the formula is too long: {len(text)} characters (limit {MAX_LENGTH})",
            text,
            MAX_LENGTH,
        )
    parser = _Parser(text, params)
    root = parser.parse()
    _check_size(text, root)
    if not is_condition(root):
        raise FormulaError(
            "a formula must be a condition (true/false), e.g. close > sma(close, 20)",
            text,
            _start(root),
        )
    return Formula(text, root, _indicators(root))


def _check_parameters(parameters: Mapping[str, float]) -> dict[str, float]:
    checked: dict[str, float] = {}
    for name, value in parameters.items():
        key = name.lower()
        if not key.isidentifier() or key in KEYWORDS or key in COLUMN_NAMES or key in FUNCTIONS:
            raise ValueError(f"parameter name {name!r} is not allowed (reserved or not a name)")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"parameter {name!r} must be a number, got {value!r}")
        checked[key] = float(value)
    return checked


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Call):
        return node.sources
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Unary):
        return (node.operand,)
    return ()


def _check_size(text: str, root: Node) -> None:
    """At most ``MAX_NODES`` nodes; the error points at the first one too many."""
    count = 0
    stack: list[Node] = [root]
    while stack:  # pre-order, left first: roughly the order of the text
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise FormulaError(
                f"the formula is too large: more than {MAX_NODES} terms (numbers, columns, "
                f"operators, calls; limit {MAX_NODES}): split it or simplify it",
                text,
                node.position,
            )
        stack.extend(reversed(_children(node)))


def _indicators(root: Node) -> tuple[Call, ...]:
    found: dict[str, Call] = {}
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, Call):
            if not node.spec.boolean:
                found.setdefault(render(node), node)
            stack.extend(reversed(node.sources))
        elif isinstance(node, Binary):
            stack.extend((node.right, node.left))
        elif isinstance(node, Unary):
            stack.append(node.operand)
    return tuple(found.values())


def _start(node: Node) -> int:
    """Column where the text of ``node`` begins."""
    while isinstance(node, Binary):
        node = node.left
    return node.position


class _Parser:
    def __init__(self, text: str, parameters: Mapping[str, float]) -> None:
        self.text = text
        self.parameters = parameters
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0  # nesting, see MAX_NESTING

    # ---- token helpers

    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def _take(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _at(self, *texts: str) -> bool:
        return self.token.kind in (TokenKind.OP, TokenKind.KEYWORD) and self.token.text in texts

    def _expect(self, text: str, context: str) -> Token:
        if not self._at(text):
            self._fail(f"expected '{text}' {context}, found {self._found()}", self.token.position)
        return self._take()

    def _at_end(self) -> bool:
        return self.tokens[self.index].kind is TokenKind.END

    def _found(self) -> str:
        token = self.token
        return "the end of the formula" if token.kind is TokenKind.END else f"'{token.text}'"

    def _fail(self, message: str, position: int) -> NoReturn:
        raise FormulaError(message, self.text, position)

    @contextlib.contextmanager
    def _nested(self, token: Token) -> Iterator[None]:
        """One level deeper (a bracket, a call, a lag, 'not' or '-'), within ``MAX_NESTING``."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            self._fail(
                f"the formula nests too deep: more than {MAX_NESTING} levels of brackets, "
                f"calls, lags, 'not' and '-' (limit {MAX_NESTING})",
                token.position,
            )
        try:
            yield
        finally:
            self.depth -= 1

    def _need(self, node: Node, condition: bool, what: str) -> Node:
        """Check that ``node`` is a condition (``condition``) or a number."""
        if is_condition(node) != condition:
            wanted = "a condition (true/false)" if condition else "a number"
            got = "a condition" if is_condition(node) else "a number"
            self._fail(f"{what} needs {wanted}, got {got}", _start(node))
        return node

    # ---- grammar

    def parse(self) -> Node:
        if self._at_end():
            self._fail("the formula is empty", 0)
        node = self._or()
        if not self._at_end():
            self._fail(
                f"unexpected {self._found()} after a complete expression", self.token.position
            )
        return node

    def _or(self) -> Node:
        node = self._and()
        while self._at("or"):
            op = self._take()
            right = self._need(self._and(), True, "'or'")
            node = Binary("or", self._need(node, True, "'or'"), right, op.position)
        return node

    def _and(self) -> Node:
        node = self._not()
        while self._at("and"):
            op = self._take()
            right = self._need(self._not(), True, "'and'")
            node = Binary("and", self._need(node, True, "'and'"), right, op.position)
        return node

    def _not(self) -> Node:
        if self._at("not"):
            op = self._take()
            with self._nested(op):
                operand = self._not()
            return Unary("not", self._need(operand, True, "'not'"), op.position)
        return self._comparison()

    def _comparison(self) -> Node:
        node = self._sum()
        if not self._at(*COMPARISONS):
            return node
        op = self._take()
        right = self._need(self._sum(), False, f"'{op.text}'")
        node = Binary(op.text, self._need(node, False, f"'{op.text}'"), right, op.position)
        if self._at(*COMPARISONS):
            self._fail("comparisons do not chain: write 'a < b and b < c'", self.token.position)
        return node

    def _sum(self) -> Node:
        node = self._product()
        while self._at("+", "-"):
            op = self._take()
            node = self._arithmetic(op, node, self._product())
        return node

    def _product(self) -> Node:
        node = self._unary()
        while self._at("*", "/"):
            op = self._take()
            node = self._arithmetic(op, node, self._unary())
        return node

    def _arithmetic(self, op: Token, left: Node, right: Node) -> Node:
        self._need(left, False, f"'{op.text}'")
        self._need(right, False, f"'{op.text}'")
        if isinstance(left, Number) and isinstance(right, Number):
            return Number(self._fold(op, left.value, right.value), left.position)
        return Binary(op.text, left, right, op.position)

    def _fold(self, op: Token, a: float, b: float) -> float:
        if op.text == "+":
            return a + b
        if op.text == "-":
            return a - b
        if op.text == "*":
            return a * b
        if b == 0:
            self._fail("division by zero", op.position)
        return a / b

    def _unary(self) -> Node:
        if self._at("-"):
            op = self._take()
            with self._nested(op):
                operand = self._need(self._unary(), False, "'-'")
            if isinstance(operand, Number):
                return Number(-operand.value, op.position)
            return Unary("-", operand, op.position)
        return self._lagged()

    def _lagged(self) -> Node:
        node = self._primary()
        while self._at("["):
            bracket = self._take()
            with self._nested(bracket):
                bars = self._or()
                self._expect("]", "to close the '['")
            self._need(node, False, "'[...]' (a lag)")
            node = _CallBuilder(self, FUNCTIONS["shift"], bracket.position).finish([node], [bars])
        return node

    def _primary(self) -> Node:
        token = self.token
        if token.kind is TokenKind.NUMBER:
            self._take()
            return Number(float(token.text), token.position)
        if token.kind is TokenKind.NAME:
            return self._name()
        if self._at("("):
            with self._nested(self._take()):
                node = self._or()
                self._expect(")", "to close the '('")
            return node
        self._fail(f"expected a number, a name or '(', found {self._found()}", token.position)

    def _name(self) -> Node:
        token = self._take()
        name, position = token.text, token.position
        if self._at("("):
            if name not in FUNCTIONS:
                hint = "a column is not a function" if name in COLUMN_NAMES else None
                self._unknown(name, position, "function", FUNCTIONS, hint)
            return self._call(FUNCTIONS[name], position)
        if name in COLUMN_NAMES:
            return Column(name, position)
        if name in self.parameters:
            return Number(self.parameters[name], position)
        if name in FUNCTIONS:
            self._fail(f"'{name}' is a function: call it as {FUNCTIONS[name].signature}", position)
        self._unknown(name, position, "name", [*COLUMN_NAMES, *self.parameters], None)

    def _unknown(
        self,
        name: str,
        position: int,
        kind: str,
        known: Mapping[str, object] | list[str],
        hint: str | None,
    ) -> NoReturn:
        close = difflib.get_close_matches(name, list(known), n=1)
        if hint is None and close:
            hint = f"did you mean '{close[0]}'?"
        if hint is None:
            hint = "known: " + (describe_all() if kind == "function" else ", ".join(known))
        self._fail(f"unknown {kind} '{name}' ({hint})", position)

    def _call(self, spec: FunctionSpec, position: int) -> Call:
        args: list[Node] = []
        with self._nested(self._take()):  # "("
            if not self._at(")"):
                args.append(self._or())
                while self._at(","):
                    self._take()
                    args.append(self._or())
            self._expect(")", f"to close the call of {spec.name}")
        return _CallBuilder(self, spec, position).build(args)


class _CallBuilder:
    """Match a call's arguments to its function's sources and parameters."""

    def __init__(self, parser: _Parser, spec: FunctionSpec, position: int) -> None:
        self.parser = parser
        self.spec = spec
        self.position = position

    def _fail(self, message: str, position: int | None = None) -> NoReturn:
        self.parser._fail(message, self.position if position is None else position)

    def build(self, args: list[Node]) -> Call:
        return self.finish(*self._split(args))

    def finish(self, sources: list[Node], rest: list[Node]) -> Call:
        for source in sources:
            self.parser._need(source, False, f"{self.spec.name}()")
        if len(rest) > len(self.spec.params):
            self._fail(
                f"too many arguments: {self.spec.signature}", _start(rest[len(self.spec.params)])
            )
        params = tuple(self._param(index, rest) for index in range(len(self.spec.params)))
        return Call(self.spec.name, tuple(sources), params, self.position)

    def _split(self, args: list[Node]) -> tuple[list[Node], list[Node]]:
        count = self.spec.sources
        if count == 1 and self.spec.implicit_source:
            if args and not isinstance(args[0], Number):
                return args[:1], args[1:]
            return [Column("close", self.position)], args
        if len(args) < count:
            what = "an argument" if count == 1 else f"{count} arguments"
            self._fail(f"{self.spec.name}() needs {what}: {self.spec.signature}")
        return args[:count], args[count:]

    def _param(self, index: int, given: list[Node]) -> float:
        param = self.spec.params[index]
        if index >= len(given):
            if param.default is None:
                self._fail(f"{self.spec.name}() needs its {param.name}: {self.spec.signature}")
            return float(param.default)
        node = given[index]
        if not isinstance(node, Number):
            self._fail(
                f"the {param.name} of {self.spec.name}() must be a number known in advance",
                _start(node),
            )
        value = node.value
        if param.integer and not value.is_integer():
            self._fail(
                f"the {param.name} of {self.spec.name}() must be a whole number", node.position
            )
        if not param.minimum <= value <= param.maximum:
            bound = f">= {param.minimum:g}" if value < param.minimum else f"<= {param.maximum:g}"
            self._fail(
                f"the {param.name} of {self.spec.name}() must be {bound}, got {value:g}",
                node.position,
            )
        return value
