"""Deterministic generator of the python suite (v1). Run: python tasks/python/generate.py

Data tasks solved by running code in the sandboxed ``python`` tool: statistics over a list of
numbers, word counts in a text, filtering and sorting table rows, string manipulation, primes
and Fibonacci numbers. Every request carries its data in full; each code call starts fresh.

Difficulty 1: one request, one code step, then the answer.
Difficulty 2: one request whose solution takes 2-3 dependent code steps (a later step's code
    uses an earlier step's printed value).
Difficulty 3: two or three requests; follow-ups refer to the previous answer ("that number").

Each task stores, per request, the oracle's code steps (already filled in), the stdout of each
step and the expected answer: all obtained by running the code in the sandbox right here.
Each task draws from its own seeded RNG, so tasks are generated in parallel and reproducibly.
"""

from __future__ import annotations

import random
import re
import statistics
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agentopd.envs.suites import write_jsonl
from agentopd.tools.python_sandbox import run_python

VERSION = 1
COUNTS = {"train": 300, "test": 100}
SEEDS = {"train": 3001, "test": 4002}
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kofi",
         "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Seoul"]
WORDS = ("the cat dog bird fish river tree stone cloud rain sun moon star light dark green blue "
         "red quick slow happy small large old new bright quiet loud garden window bridge market "
         "apple lemon road hill").split()
WORD_RULE = ("Treat words case-insensitively; a word is a run of letters (ignore the punctuation "
             "marks . , ! ?).")
TEXT_CODE = 'import re\ntext = """{text}"""\nwords = re.findall(r"[a-z]+", text.lower())\n'
TABLE_CODE = 'import csv, io\nrows = list(csv.DictReader(io.StringIO("""{csv}""")))\n'
PRIME_FN = ("def is_prime(n):\n    if n < 2:\n        return False\n    i = 2\n"
            "    while i * i <= n:\n        if n % i == 0:\n            return False\n        i += 1\n"
            "    return True\n")


@dataclass
class Part:
    """One user request: its text, the oracle's code steps, what each step does, answer kind.

    Code steps may use ``<<k>>`` for the stdout of step k of the same request and ``<<prev>>``
    for the previous request's answer."""

    request: str
    steps: list[str]
    plan: list[str]
    kind: str  # int | float | text | list
    chain: bool = True  # a follow-up may refer to this answer


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ---- data -------------------------------------------------------------------------------------
def _numbers(r: random.Random) -> list[int]:
    return [r.randint(1, 99) for _ in range(r.randint(12, 22))]


def _text(r: random.Random) -> str:
    sentences = []
    for _ in range(r.randint(4, 7)):
        words = [r.choice(WORDS) for _ in range(r.randint(5, 9))]
        if r.random() < 0.3:
            words[r.randrange(1, len(words) - 1)] += ","
        sentences.append(" ".join(words).capitalize() + r.choice(".!?"))
    return " ".join(sentences)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _table(r: random.Random) -> tuple[str, list[dict]]:
    while True:
        rows = [
            {"name": n, "age": r.randint(18, 70), "city": r.choice(CITIES[:4]), "score": r.randint(40, 100)}
            for n in r.sample(NAMES, r.randint(8, 12))
        ]
        scores = sorted((x["score"] for x in rows), reverse=True)
        if scores[0] != scores[1]:  # a unique top scorer
            break
    csv = "name,age,city,score\n" + "\n".join(f"{x['name']},{x['age']},{x['city']},{x['score']}" for x in rows)
    return csv, rows


# ---- one-step requests ------------------------------------------------------------------------
def t_mean(r):
    xs = _numbers(r)
    return Part(f"Here is a list of numbers: {xs}. What is their mean? Round it to 2 decimal places.",
                [f"data = {xs}\nprint(round(sum(data) / len(data), 2))"], ["compute the mean"], "float")


def t_median(r):
    xs = _numbers(r)
    return Part(f"What is the median of these numbers: {xs}?",
                [f"import statistics\ndata = {xs}\nprint(statistics.median(data))"], ["compute the median"], "float")


def t_pstdev(r):
    xs = _numbers(r)
    return Part(f"Compute the population standard deviation of {xs}. Round it to 2 decimal places.",
                [f"import statistics\ndata = {xs}\nprint(round(statistics.pstdev(data), 2))"],
                ["compute the population standard deviation"], "float")


def t_divisible(r):
    xs, k = _numbers(r), r.randint(3, 9)
    return Part(f"How many of these numbers are divisible by {k}: {xs}?",
                [f"data = {xs}\nprint(sum(1 for x in data if x % {k} == 0))"], [f"count multiples of {k}"], "int")


def t_second_largest(r):
    xs = _numbers(r)
    return Part(f"What is the second largest distinct value in {xs}?",
                [f"data = {xs}\nprint(sorted(set(data))[-2])"], ["find the second largest distinct value"], "int")


def t_word_count(r):
    text = _text(r)
    word = r.choice(_words(text))
    return Part(f'How many times does the word "{word}" appear in this text? {WORD_RULE}\n\nText: {text}',
                [TEXT_CODE.format(text=text) + f'print(words.count("{word}"))'], [f'count "{word}"'], "int")


def t_distinct_words(r):
    text = _text(r)
    return Part(f"How many distinct words does this text contain? {WORD_RULE}\n\nText: {text}",
                [TEXT_CODE.format(text=text) + "print(len(set(words)))"], ["count distinct words"], "int")


def _unique_top_text(r: random.Random) -> str:
    while True:
        text = _text(r)
        top = Counter(_words(text)).most_common(2)
        if top[0][1] > top[1][1]:
            return text


def t_most_common(r):
    text = _unique_top_text(r)
    return Part(f"Which word occurs most often in this text? {WORD_RULE} Give the word in lowercase."
                f"\n\nText: {text}",
                [TEXT_CODE.format(text=text) + "from collections import Counter\n"
                 "print(Counter(words).most_common(1)[0][0])"], ["find the most frequent word"], "text")


def t_longest_word(r):
    text = _text(r)
    return Part(f"What is the longest word in this text? If several are equally long, give the one that "
                f"appears first. {WORD_RULE} Give it in lowercase.\n\nText: {text}",
                [TEXT_CODE.format(text=text) + "print(max(words, key=len))"], ["find the longest word"], "text")


def t_filter_names(r):
    while True:
        csv, rows = _table(r)
        city, t = r.choice(CITIES[:4]), r.choice([50, 60, 70])
        if any(x["city"] == city and x["score"] > t for x in rows):
            break
    return Part(f"Here is a table (CSV):\n{csv}\n\nList the names of the people from {city} with a score "
                f"above {t}, sorted alphabetically and separated by commas.",
                [TABLE_CODE.format(csv=csv) + f'names = sorted(x["name"] for x in rows if x["city"] == "{city}" '
                 f'and int(x["score"]) > {t})\nprint(", ".join(names))'], [f"filter rows ({city}, score > {t})"], "list")


def t_city_avg_age(r):
    csv, rows = _table(r)
    city = r.choice(sorted({x["city"] for x in rows}))
    return Part(f"Here is a table (CSV):\n{csv}\n\nWhat is the average age of the people from {city}? "
                "Round it to 2 decimal places.",
                [TABLE_CODE.format(csv=csv) + f'ages = [int(x["age"]) for x in rows if x["city"] == "{city}"]\n'
                 "print(round(sum(ages) / len(ages), 2))"], [f"average age in {city}"], "float")


def t_top_scorer(r):
    csv, _ = _table(r)
    return Part(f"Here is a table (CSV):\n{csv}\n\nWho has the highest score? Give the name.",
                [TABLE_CODE.format(csv=csv) + 'print(max(rows, key=lambda x: int(x["score"]))["name"])'],
                ["find the top scorer"], "text")


def t_reverse_words(r):
    s = " ".join(r.choice(WORDS) for _ in range(r.randint(6, 10)))
    return Part(f'Reverse the order of the words in this sentence: "{s}". Give the reversed sentence, '
                "words separated by single spaces.",
                [f's = "{s}"\nprint(" ".join(reversed(s.split())))'], ["reverse the word order"], "text")


def t_vowels(r):
    s = " ".join(r.choice(WORDS) for _ in range(r.randint(5, 9)))
    return Part(f'How many vowels (a, e, i, o, u) are in the string "{s}"?',
                [f's = "{s}"\nprint(sum(1 for c in s if c in "aeiou"))'], ["count vowels"], "int")


def t_caesar(r):
    w, k = r.choice([w for w in WORDS if len(w) >= 4]), r.randint(1, 25)
    return Part(f'Encode the word "{w}" with a Caesar shift of {k}: each letter moves {k} places forward '
                "in the alphabet, wrapping from z back to a. Give the encoded word in lowercase.",
                [f'w, k = "{w}", {k}\nprint("".join(chr((ord(c) - 97 + k) % 26 + 97) for c in w))'],
                [f"shift each letter by {k}"], "text")


def t_prime_sum(r):
    n = r.randint(1000, 30000)
    return Part(f"What is the sum of all prime numbers below {n}?",
                [PRIME_FN + f"print(sum(p for p in range({n}) if is_prime(p)))"], [f"sum the primes below {n}"], "int")


def t_nth_prime(r):
    n = r.randint(50, 3000)
    return Part(f"What is the {_ordinal(n)} prime number? (2 is the 1st prime.)",
                [PRIME_FN + f"count, p = 0, 1\nwhile count < {n}:\n    p += 1\n    if is_prime(p):\n"
                 "        count += 1\nprint(p)"], [f"find prime number {n}"], "int")


def t_fib(r):
    n = r.randint(40, 150)
    return Part(f"What is the {_ordinal(n)} Fibonacci number, with F(1) = F(2) = 1? Give all its digits.",
                [f"a, b = 1, 1\nfor _ in range({n} - 2):\n    a, b = b, a + b\nprint(b)"], [f"compute F({n})"], "int")


def t_primes_between(r):
    a = r.randint(100, 5000)
    b = a + r.randint(200, 3000)
    return Part(f"How many prime numbers are there between {a} and {b} (both inclusive)?",
                [PRIME_FN + f"print(sum(1 for p in range({a}, {b} + 1) if is_prime(p)))"],
                [f"count primes in [{a}, {b}]"], "int")


def t_digit_sum_power(r):
    base, e = r.choice([2, 3, 7]), r.randint(50, 500)
    return Part(f"What is the sum of the digits of {base}**{e} ({base} to the power {e})?",
                [f"print(sum(int(d) for d in str({base} ** {e})))"], [f"sum the digits of {base}**{e}"], "int")


def t_collatz(r):
    n = r.randint(27, 100000)
    return Part(f"Starting from {n}, repeatedly replace n by n / 2 if it is even and by 3n + 1 if it is odd. "
                "How many steps does it take to reach 1?",
                [f"n, steps = {n}, 0\nwhile n != 1:\n    n = n // 2 if n % 2 == 0 else 3 * n + 1\n"
                 "    steps += 1\nprint(steps)"], [f"count Collatz steps from {n}"], "int")


ONE_STEP: list[Callable[[random.Random], Part]] = [
    t_mean, t_median, t_pstdev, t_divisible, t_second_largest, t_word_count, t_distinct_words,
    t_most_common, t_longest_word, t_filter_names, t_city_avg_age, t_top_scorer, t_reverse_words,
    t_vowels, t_caesar, t_prime_sum, t_nth_prime, t_fib, t_primes_between, t_digit_sum_power, t_collatz,
]


# ---- multi-step requests ----------------------------------------------------------------------
def m_above_mean(r):
    xs = _numbers(r)
    return Part(f"For the numbers {xs}: first compute their mean, then count how many of the numbers are "
                "strictly greater than that mean. Give the count.",
                [f"data = {xs}\nprint(sum(data) / len(data))", f"data = {xs}\nprint(sum(1 for x in data if x > <<0>>))"],
                ["compute the mean", "count the numbers above the mean"], "int")


def m_within_sd(r):
    xs = _numbers(r)
    return Part(f"For the numbers {xs}: compute the mean, then the population standard deviation, then count "
                "how many numbers lie within one standard deviation of the mean (mean - sd <= x <= mean + sd).",
                [f"data = {xs}\nprint(sum(data) / len(data))",
                 f"import statistics\ndata = {xs}\nprint(statistics.pstdev(data))",
                 f"data = {xs}\nm, sd = <<0>>, <<1>>\nprint(sum(1 for x in data if m - sd <= x <= m + sd))"],
                ["compute the mean", "compute the population standard deviation", "count values within one sd"],
                "int")


def m_median_below(r):
    xs = _numbers(r)
    return Part(f"For the numbers {xs}: find their median, then add up all the numbers that are strictly "
                "below the median. Give that sum.",
                [f"import statistics\ndata = {xs}\nprint(statistics.median(data))",
                 f"data = {xs}\nprint(sum(x for x in data if x < <<0>>))"],
                ["compute the median", "sum the numbers below the median"], "int")


def m_city_of_top(r):
    csv, _ = _table(r)
    return Part(f"Here is a table (CSV):\n{csv}\n\nFind the city of the person with the highest score. Then "
                "compute the average score of everyone from that city, rounded to 2 decimal places.",
                [TABLE_CODE.format(csv=csv) + 'print(max(rows, key=lambda x: int(x["score"]))["city"])',
                 TABLE_CODE.format(csv=csv) + 's = [int(x["score"]) for x in rows if x["city"] == "<<0>>"]\n'
                 "print(round(sum(s) / len(s), 2))"],
                ["find the top scorer's city", "average score in that city"], "float")


def m_prime_digits(r):
    n = r.randint(1000, 20000)
    return Part(f"Compute the sum of all primes below {n}. Then give the sum of the digits of that sum.",
                [PRIME_FN + f"print(sum(p for p in range({n}) if is_prime(p)))",
                 "print(sum(int(d) for d in str(<<0>>)))"],
                [f"sum the primes below {n}", "sum the digits of that sum"], "int")


def m_fib_even_digits(r):
    n = r.randint(40, 150)
    return Part(f"Compute the {_ordinal(n)} Fibonacci number (F(1) = F(2) = 1). Then count how many of its digits "
                "are even (0, 2, 4, 6 or 8).",
                [f"a, b = 1, 1\nfor _ in range({n} - 2):\n    a, b = b, a + b\nprint(b)",
                 'print(sum(1 for d in str(<<0>>) if d in "02468"))'],
                [f"compute F({n})", "count its even digits"], "int")


def m_common_word_longer(r):
    text = _unique_top_text(r)
    return Part(f"Find the word that occurs most often in this text, then count how many words in the text "
                f"(counting repeats) are longer than it. {WORD_RULE}\n\nText: {text}",
                [TEXT_CODE.format(text=text) + "from collections import Counter\n"
                 "print(Counter(words).most_common(1)[0][0])",
                 TEXT_CODE.format(text=text) + 'print(sum(1 for w in words if len(w) > len("<<0>>")))'],
                ["find the most frequent word", "count the longer words"], "int")


MULTI_STEP = [m_above_mean, m_within_sd, m_median_below, m_city_of_top, m_prime_digits,
              m_fib_even_digits, m_common_word_longer]


# ---- follow-ups (difficulty 3) ----------------------------------------------------------------
def _shape(part: Part, answer: str) -> str:
    kind = part.kind
    if not part.chain:
        return "other"
    if kind == "int":
        return "other" if int(answer) < 2 else "int" if int(answer) <= 10**12 else "bigint"
    if kind == "float":
        return "float" if float(answer) >= 0 else "other"
    if kind == "text" and re.fullmatch(r"[a-z]+", answer):
        return "word"
    if kind == "list":
        return "list"
    return "other"


FOLLOW_UPS: dict[str, list[Callable[[random.Random], Part]]] = {
    "int": [
        lambda r: Part("What is the sum of the digits of that number?",
                       ["print(sum(int(d) for d in str(<<prev>>)))"], ["sum its digits"], "int"),
        lambda r: Part("Write that number in binary, without the 0b prefix.",
                       ["print(bin(<<prev>>)[2:])"], ["convert to binary"], "text"),
        lambda r: Part("Is that number prime? Answer yes or no.",
                       [PRIME_FN + 'print("yes" if is_prime(<<prev>>) else "no")'], ["test primality"], "text",
                       chain=False),
        lambda r: Part("What is the largest prime factor of that number?",
                       ["n, f, best = <<prev>>, 2, 1\nwhile f * f <= n:\n    while n % f == 0:\n"
                        "        best, n = f, n // f\n    f += 1\nprint(max(best, n) if n > 1 else best)"],
                       ["find its largest prime factor"], "int"),
        lambda r: (lambda k: Part(f"What is the remainder when that number is divided by {k}?",
                                  [f"print(<<prev>> % {k})"], [f"take it modulo {k}"], "int"))(r.randint(7, 97)),
    ],
    "bigint": [
        lambda r: Part("What is the sum of the digits of that number?",
                       ["print(sum(int(d) for d in str(<<prev>>)))"], ["sum its digits"], "int"),
        lambda r: Part("How many digits does that number have?", ["print(len(str(<<prev>>)))"],
                       ["count its digits"], "int"),
        lambda r: (lambda k: Part(f"What is the remainder when that number is divided by {k}?",
                                  [f"print(<<prev>> % {k})"], [f"take it modulo {k}"], "int"))(r.randint(7, 97)),
    ],
    "float": [
        lambda r: Part("What is the square root of that value? Round it to 3 decimal places.",
                       ["import math\nprint(round(math.sqrt(<<prev>>), 3))"], ["take the square root"], "float"),
        lambda r: (lambda k: Part(f"Multiply that result by {k} and round to 2 decimal places.",
                                  [f"print(round(<<prev>> * {k}, 2))"], [f"multiply by {k}"], "float"))(r.randint(3, 40)),
    ],
    "word": [
        lambda r: Part("How many letters does that word have?", ['print(len("<<prev>>"))'], ["count letters"], "int"),
        lambda r: Part("Write that word backwards.", ['print("<<prev>>"[::-1])'], ["reverse the word"], "text"),
        lambda r: Part("Write that word in uppercase with its vowels (a, e, i, o, u) removed.",
                       ['print("".join(c for c in "<<prev>>" if c not in "aeiou").upper())'],
                       ["uppercase without vowels"], "text"),
    ],
    "list": [
        lambda r: Part("How many names are in that list?", ['print(len("<<prev>>".split(", ")))'],
                       ["count the names"], "int"),
        lambda r: Part("Which name in that list is the longest? If several are equally long, give the first.",
                       ['print(max("<<prev>>".split(", "), key=len))'], ["find the longest name"], "text"),
    ],
}


# ---- running and assembling -------------------------------------------------------------------
def _fill(code: str, outputs: list[str], prev: str | None) -> str:
    for k, out in enumerate(outputs):
        code = code.replace(f"<<{k}>>", out)
    return code.replace("<<prev>>", prev) if prev is not None else code


def _execute(part: Part, prev: str | None) -> tuple[list[str], list[str]]:
    """Run the part's steps in the sandbox: (filled code per step, stdout per step)."""
    codes, outputs = [], []
    for step in part.steps:
        code = _fill(step, outputs, prev)
        res = run_python(code, timeout_s=60)
        if not res.ok or not res.stdout.strip():
            raise RuntimeError(f"oracle code failed ({res.killed_reason or res.exit_code}):\n{code}\n{res.stderr}")
        codes.append(code)
        outputs.append(res.stdout.strip())
    return codes, outputs


def make_task(split: str, idx: int, attempt: int = 0) -> dict:
    r = random.Random(f"{SEEDS[split]}-{idx}-{attempt}")
    difficulty = r.choices([1, 2, 3], weights=[35, 30, 35])[0]
    while True:
        first = r.choice(MULTI_STEP if difficulty == 2 or (difficulty == 3 and r.random() < 0.3) else ONE_STEP)(r)
        codes, outputs = _execute(first, None)
        parts, all_codes, all_outputs = [first], [codes], [outputs]
        if difficulty < 3 or _shape(first, outputs[-1]) in FOLLOW_UPS:
            break
    while difficulty == 3 and len(parts) < r.choice([2, 3]):
        options = FOLLOW_UPS.get(_shape(parts[-1], all_outputs[-1][-1]))
        if not options:
            break
        part = r.choice(options)(r)
        codes, outputs = _execute(part, all_outputs[-1][-1])
        parts.append(part)
        all_codes.append(codes)
        all_outputs.append(outputs)
    return {
        "id": f"python-v{VERSION}-{split}-{idx:04d}",
        "family": "python",
        "split": split,
        "version": VERSION,
        "difficulty": difficulty,
        "requests": [p.request for p in parts],
        "kinds": [p.kind for p in parts],
        "plan": [p.plan for p in parts],
        "code": all_codes,
        "outputs": all_outputs,
        "answers": [outs[-1] for outs in all_outputs],
    }


def generate(split: str, exclude: set[tuple[str, ...]] = frozenset(), workers: int = 4) -> list[dict]:
    """All tasks of `split`; a task whose requests repeat an earlier one (or one in `exclude`,
    e.g. the train split when making test) is redrawn with the next attempt of its RNG."""
    seen = set(exclude)
    with ThreadPoolExecutor(workers) as pool:  # each task has its own RNG: order-independent
        rows = list(pool.map(lambda i: make_task(split, i), range(COUNTS[split])))
    for i, row in enumerate(rows):
        attempt = 0
        while tuple(row["requests"]) in seen:
            attempt += 1
            row = make_task(split, i, attempt)
        seen.add(tuple(row["requests"]))
        rows[i] = row
    return rows


def _sanity(rows: list[dict]) -> None:
    for row in rows:
        for kind, answer in zip(row["kinds"], row["answers"]):
            if kind in ("int", "float"):
                float(answer)
    assert statistics.mean(len(sum(r["code"], [])) for r in rows) > 1


if __name__ == "__main__":
    here = Path(__file__).parent / f"v{VERSION}"
    train = generate("train")
    test = generate("test", exclude={tuple(t["requests"]) for t in train})
    for split, rows in (("train", train), ("test", test)):
        _sanity(rows)
        write_jsonl(here / f"{split}.jsonl", rows)
        print(f"wrote {here / f'{split}.jsonl'} ({len(rows)} tasks)")
