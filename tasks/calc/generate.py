"""Deterministic generator of the calc suite (v1). Run: python tasks/calc/generate.py

Difficulty 1: one arithmetic question, one calculator step (some with small numbers).
Difficulty 2: a word problem needing 2-3 dependent calculator steps.
Difficulty 3: two or three user requests in one episode; follow-ups build on the last answer.
"""

from __future__ import annotations

import random
from pathlib import Path

from agentopd.envs.suites import write_splits
from agentopd.tools.calculator import evaluate, format_number

VERSION = 1
COUNTS = {"train": 300, "test": 100}
SEEDS = {"train": 1001, "test": 2002}
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun"]


def _simple(r: random.Random) -> tuple[str, list[str]]:
    if r.random() < 0.4:  # small enough that a 135M model sometimes answers without the tool
        a, b, op = r.randint(2, 15), r.randint(2, 9), r.choice(["+", "-", "*"])
        return f"What is {a} {op} {b}?", [f"{a} {op} {b}"]
    op = r.choice(["+", "-", "*", "/"])
    if op == "/":
        b = r.randint(3, 40)
        a = b * r.randint(12, 400)
    else:
        a, b = r.randint(12, 999), r.randint(12, 999)
    phr = {"+": "the sum of {a} and {b}", "-": "{a} minus {b}", "*": "{a} times {b}", "/": "{a} divided by {b}"}
    q = r.choice([f"What is {a} {op} {b}?", "What is " + phr[op].format(a=a, b=b) + "?"])
    return q, [f"{a} {op} {b}"]


def _word(r: random.Random) -> tuple[str, list[str]]:
    name = r.choice(NAMES)
    kind = r.randrange(5)
    if kind == 0:
        n, p = r.randint(3, 19), r.choice([1.25, 2.5, 3.75, 4.2, 6.4, 7.5])
        bill = 100 if n * p > 50 else 50
        return (
            f"{name} buys {n} notebooks at ${p} each and pays with a ${bill} bill. "
            f"How much change does {name} get?",
            [f"{n} * {p}", f"{bill} - {{0}}"],
        )
    if kind == 1:
        vals = [r.randint(10, 35) for _ in range(3)]
        while sum(vals) % 3:
            vals[2] += 1
        return (
            f"The temperatures on three days were {vals[0]}, {vals[1]} and {vals[2]} degrees. "
            "What was the average temperature?",
            [f"{vals[0]} + {vals[1]} + {vals[2]}", "{0} / 3"],
        )
    if kind == 2:
        w, length, c = r.randint(4, 40), r.randint(5, 60), r.choice([3, 4.5, 7, 12.25])
        return (
            f"A rectangular garden is {w} m by {length} m. Fencing costs ${c} per meter. "
            "How much does it cost to fence the whole perimeter?",
            [f"2 * ({w} + {length})", f"{{0}} * {c}"],
        )
    if kind == 3:
        h, h2 = r.randint(2, 5), r.randint(1, 4)
        speed = r.randint(40, 120)
        d = speed * h + r.randint(-20, 20)
        d2 = speed * (h + h2) - d
        return (
            f"A train travels {d} km in {h} hours, then {d2} km in {h2} hours. "
            "What is its average speed in km/h over the whole trip?",
            [f"{d} + {d2}", f"{h} + {h2}", "{0} / {1}"],
        )
    p, pct = r.randint(20, 400), r.choice([10, 15, 20, 25, 30, 40])
    return (
        f"A jacket costs ${p}. It is on sale for {pct}% off. What is the sale price in dollars?",
        [f"{p} * {pct} / 100", f"{p} - {{0}}"],
    )


def _follow_up(r: random.Random) -> tuple[str, list[str]]:
    k = r.randint(2, 25)
    return r.choice(
        [
            (f"Now multiply that result by {k}.", [f"{{prev}} * {k}"]),
            (f"Subtract {k * 7} from that.", [f"{{prev}} - {k * 7}"]),
            (f"Add {k * 13} to it. What do you get?", [f"{{prev}} + {k * 13}"]),
            (f"What is {k * 5}% of that?", [f"{{prev}} * {k * 5} / 100"]),
        ]
    )


def _run(steps: list[str], prev: float | None) -> float:
    values: list[float] = []
    for s in steps:
        env = {"prev": format_number(prev)} if prev is not None else {}
        values.append(evaluate(s.format(*[format_number(v) for v in values], **env)))
    return values[-1]


def make_task(r: random.Random, split: str, idx: int) -> dict:
    difficulty = r.choices([1, 2, 3], weights=[35, 35, 30])[0]
    first = _simple(r) if difficulty == 1 or (difficulty == 3 and r.random() < 0.5) else _word(r)
    requests, steps = [first[0]], [first[1]]
    if difficulty == 3:
        for _ in range(r.choice([1, 2])):
            q, s = _follow_up(r)
            requests.append(q)
            steps.append(s)
    answers: list[float] = []
    for s in steps:
        answers.append(_run(s, answers[-1] if answers else None))
    return {
        "id": f"calc-v{VERSION}-{split}-{idx:04d}",
        "family": "calc",
        "split": split,
        "version": VERSION,
        "difficulty": difficulty,
        "requests": requests,
        "steps": steps,
        "answers": [float(format_number(a)) for a in answers],
    }


def generate(split: str) -> list[dict]:
    r = random.Random(SEEDS[split])
    rows, seen = [], set()
    if split == "test":  # keep test questions out of train
        seen = {tuple(t["requests"]) for t in generate("train")}
    while len(rows) < COUNTS[split]:
        task = make_task(r, split, len(rows))
        key = tuple(task["requests"])
        if key in seen:
            continue
        seen.add(key)
        rows.append(task)
    return rows


if __name__ == "__main__":
    write_splits(Path(__file__).parent / f"v{VERSION}", generate, COUNTS)
