"""A calculator tool: arithmetic evaluated by walking a Python AST, never by `eval`.

Guards: only numeric literals, + - * / // % **, unary +/-, parentheses and the functions
sqrt, abs, round, min, max, floor, ceil are accepted; names, attributes, calls of anything
else, comprehensions and strings are rejected; exponents, literals, results and round's digits
are bounded so a single expression cannot hang the process. Does not guard: floating-point rounding.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable

from agentopd.tools.core import ToolFailure

MAX_EXPR_CHARS = 300
MAX_ABS = 1e15
MAX_EXPONENT = 64

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
}


def evaluate(expression: str) -> float:
    """Evaluate an arithmetic expression; raise ToolFailure with a reason on bad input."""
    if len(expression) > MAX_EXPR_CHARS:
        raise ToolFailure(f"expression longer than {MAX_EXPR_CHARS} characters")
    expr = expression.replace("^", "**").replace("×", "*").replace("÷", "/")
    expr = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", expr)  # thousands separators: 1,234
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise ToolFailure(f"cannot parse {expression!r} as arithmetic") from None
    value = _eval(tree.body)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise ToolFailure("result is not a finite number")
    return value


MAX_ROUND_DIGITS = 15
"""`round`'s digits are bounded: round(1, -10**7) once took 12 s (Python builds 10**(10**7))."""


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        if abs(node.value) > MAX_ABS:
            raise ToolFailure("number too large")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolFailure(f"exponent larger than {MAX_EXPONENT}")
        try:
            out = _BINOPS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolFailure("division by zero") from None
        if isinstance(out, complex):
            raise ToolFailure("result is not a real number")
        if abs(out) > MAX_ABS:
            raise ToolFailure("result too large")
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS:
        if node.keywords:
            raise ToolFailure("keyword arguments are not supported")
        args = [_eval(a) for a in node.args]
        if node.func.id == "round" and len(args) == 2 and not (
                float(args[1]).is_integer() and abs(args[1]) <= MAX_ROUND_DIGITS):
            raise ToolFailure(f"round: digits must be a whole number between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}")
        if node.func.id == "round" and len(args) == 2:
            args[1] = int(args[1])
        try:
            out = _FUNCS[node.func.id](*args)
        except (TypeError, ValueError, OverflowError) as e:
            raise ToolFailure(f"{node.func.id}: {e}") from None
        if abs(out) > MAX_ABS:
            raise ToolFailure("result too large")
        return out
    raise ToolFailure(f"unsupported element {type(node).__name__} in expression")


def format_number(value: float) -> str:
    """Integers without a decimal point; floats rounded to 6 significant decimals."""
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression and return the result.

    Args:
        expression: Arithmetic using numbers, + - * / // % ** and parentheses, e.g. "(12.5 * 4) - 7". Functions: sqrt, abs, round, min, max, floor, ceil.
    """
    return format_number(evaluate(expression))
