"""The subset of CEL that the KFP compiler writes into IR, evaluated as KFP's driver does.

Two places use it: a sub-DAG task's `triggerPolicy.condition` (dsl.If / Elif / Else), over
`inputs.parameter_values['<input>']`, and an input's `parameterExpressionSelector`
(`parseJson(string_value)["<field>"]`, a field of a ParallelFor item). What the compiler emits:
`== != < <= > >=`, `&&`, `||`, `!( )`, `int()` / `double()` casts, and string, number and boolean
literals. Anything else is an IRError naming the expression.

Also the input placeholders the compiler leaves in constants (`fill_inputs`): an f-string over
pipeline channels, an importer's metadata.
"""
from __future__ import annotations

import json
import re

from kfx.runner.ir import IRError

_TOKEN = re.compile(r"""\s*(?:
    (?P<number>\d+\.\d*(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?|\.\d+)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\].,])
)""", re.VERBOSE)

_COMPARE = {"==", "!=", "<", "<=", ">", ">="}
_FUNCTIONS = {"int", "double", "string", "parseJson"}


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise IRError(f"expression {text!r}: cannot read it at {text[pos:pos + 20]!r}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


def _cast(name: str, value):
    try:
        if name == "int":
            return int(float(value)) if isinstance(value, str) else int(value)
        if name == "double":
            return float(value)
        if name == "string":
            return value if isinstance(value, str) else json.dumps(value)
        return json.loads(value)   # parseJson
    except (TypeError, ValueError) as err:
        raise IRError(f"{name}({value!r}): {err}") from err


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def _compare(op: str, left, right) -> bool:
    if _kind(left) != _kind(right):   # CEL has no cross-type ordering; equality across types is false
        if op in ("==", "!="):
            return op == "!="
        raise IRError(f"cannot compare {left!r} {op} {right!r}")
    return {"==": left == right, "!=": left != right, "<": left < right, "<=": left <= right,
            ">": left > right, ">=": left >= right}[op]


class _Parser:
    """Recursive descent over the tokens, evaluating as it goes (the expressions are tiny)."""

    def __init__(self, text: str, variables: dict):
        self.text, self.variables = text, variables
        self.tokens, self.pos = _tokens(text), 0

    def error(self, what: str) -> IRError:
        return IRError(f"expression {self.text!r}: {what}")

    def peek(self) -> str:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else ""

    def take(self, expected: str = "") -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise self.error("ends too early")
        token = self.tokens[self.pos]
        if expected and token[1] != expected:
            raise self.error(f"expected {expected!r}, found {token[1]!r}")
        self.pos += 1
        return token

    def parse(self):
        value = self.disjunction()
        if self.pos != len(self.tokens):
            raise self.error(f"unexpected {self.peek()!r}")
        return value

    def disjunction(self):
        return self._chain("||", self.conjunction)

    def conjunction(self):
        return self._chain("&&", self.unary)

    def _chain(self, op: str, operand):
        value = operand()
        while self.peek() == op:
            self.take()
            right = operand()   # evaluated either way: a malformed right side is an error
            value = (bool(value) or bool(right)) if op == "||" else (bool(value) and bool(right))
        return value

    def unary(self):
        if self.peek() == "!":
            self.take()
            value = self.unary()
            if not isinstance(value, bool):
                raise self.error(f"! of a non-boolean {value!r}")
            return not value
        return self.comparison()

    def comparison(self):
        left = self.postfix()
        if self.peek() in _COMPARE:
            op = self.take()[1]
            return _compare(op, left, self.postfix())
        return left

    def postfix(self):
        value = self.primary()
        while self.peek() in ("[", "."):
            if self.take()[1] == "[":
                key = self.disjunction()
                self.take("]")
            else:
                key = self.take()[1]
            try:
                value = value[key]
            except (KeyError, IndexError, TypeError) as err:
                raise self.error(f"no {key!r} in {value!r}") from err
        return value

    def primary(self):
        kind, text = self.take()
        if text == "(":
            value = self.disjunction()
            self.take(")")
            return value
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "string":
            return json.loads('"' + text[1:-1].replace('"', '\\"').replace("\\'", "'") + '"')
        if kind == "name":
            if text in ("true", "false"):
                return text == "true"
            if text == "null":
                return None
            if self.peek() == "(":
                if text not in _FUNCTIONS:
                    raise self.error(f"function {text}() is not supported")
                self.take()
                argument = self.disjunction()
                self.take(")")
                return _cast(text, argument)
            if text not in self.variables:
                raise self.error(f"unknown name {text!r}")
            return self.variables[text]
        raise self.error(f"unexpected {text!r}")


def condition(expression: str, parameter_values: dict) -> bool:
    """A triggerPolicy condition over a task's resolved input parameters."""
    value = _Parser(expression, {"inputs": {"parameter_values": parameter_values}}).parse()
    if not isinstance(value, bool):
        raise IRError(f"condition {expression!r} is {value!r}, not true or false")
    return value


def select(expression: str, value):
    """A parameterExpressionSelector applied to a value (`string_value`: the value as JSON text)."""
    text = value if isinstance(value, str) else json.dumps(value)
    return _Parser(expression, {"string_value": text}).parse()


_INPUT = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


def fill_inputs(value, params: dict):
    """`value` (a string, or a dict or list of them) with `{{$.inputs.parameters['x']}}` replaced by
    the task's input `x`, as KFP's driver fills them: a string that is one placeholder becomes the
    value itself, a placeholder within a text becomes its text (JSON for a non-string)."""
    if isinstance(value, dict):
        return {k: fill_inputs(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_inputs(v, params) for v in value]
    if not isinstance(value, str) or "{{$.inputs" not in value:
        return value
    whole = _INPUT.fullmatch(value)
    if whole and whole.group(1) in params:
        return params[whole.group(1)]
    return _INPUT.sub(lambda m: _text(params[m.group(1)]) if m.group(1) in params else m.group(0), value)


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
