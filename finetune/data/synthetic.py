"""Built-in synthetic chain-of-thought data: multi-step arithmetic word problems.

Each row is {"question", "rationale", "answer"}; the rationale works the problem one
operation per line, so the data needs no download and every answer is checkable.
Rows are a pure function of (seed, index): the same seed always gives the same data,
and `split="test"` draws from a disjoint seed stream so train and test never overlap.
"""

import random

NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Finn", "Grace", "Hugo", "Iris", "Jack",
         "Kara", "Leo", "Maya", "Noah", "Olga", "Paul", "Rosa", "Sam", "Tara", "Victor"]
ITEMS = ["apples", "books", "coins", "marbles", "pencils", "stickers", "cookies", "stamps",
         "shells", "cards", "eggs", "balloons"]

# (question clause, rationale clause, operation); {n} is the operand, {item} the noun.
STEPS = [
    ("buys {n} more", "After buying {n} more, {name} has {a} + {n} = {b} {item}.", "+"),
    ("finds {n} more", "After finding {n} more, {name} has {a} + {n} = {b} {item}.", "+"),
    ("gives away {n}", "After giving away {n}, {name} has {a} - {n} = {b} {item}.", "-"),
    ("loses {n}", "After losing {n}, {name} has {a} - {n} = {b} {item}.", "-"),
    ("ends up with {n} times as many", "Ending up with {n} times as many means {a} * {n} = {b} {item}.", "*"),
]
SPLIT_OFFSET = {"train": 0, "validation": 1_000_003, "test": 2_000_003}


def _problem(rng: random.Random, n_steps: int) -> dict:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, 30)
    clauses = []
    lines = [f"{name} starts with {value} {item}."]
    for _ in range(n_steps):
        q, r, op = rng.choice(STEPS)
        if op == "*":
            if value > 25:  # keep numbers small enough to be worked in the head
                q, r, op = STEPS[2]
            else:
                n = rng.randint(2, 4)
        if op == "+":
            n = rng.randint(1, 30)
        if op == "-":
            n = rng.randint(1, value - 1) if value > 1 else 0
        new = {"+": value + n, "-": value - n, "*": value * n}[op]
        clauses.append(q.format(n=n))
        lines.append(r.format(n=n, a=value, b=new, name=name, item=item))
        value = new
    question = (f"{name} has {lines[0].split(' with ')[1][:-1]}. {name} "
                + ", then ".join(clauses) + f". How many {item} does {name} have now?")
    return {"question": question, "rationale": "\n".join(lines), "answer": str(value)}


def arithmetic_cot(n: int, seed: int = 0, split: str = "train", min_steps: int = 2,
                   max_steps: int = 3) -> list[dict]:
    """`n` word problems with worked rationales; deterministic in (seed, split)."""
    if split not in SPLIT_OFFSET:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLIT_OFFSET)}")
    rows = []
    for i in range(n):
        rng = random.Random(f"arith-{seed}-{SPLIT_OFFSET[split]}-{i}")
        rows.append(_problem(rng, rng.randint(min_steps, max_steps)))
    return rows


def arithmetic_answers(n: int, seed: int = 0, split: str = "train", **kw) -> list[dict]:
    """The same problems as `arithmetic_cot` with the rationales removed: questions and final answers only
    (the input of self-taught rationales, finetune/star/)."""
    return [{**row, "rationale": ""} for row in arithmetic_cot(n, seed=seed, split=split, **kw)]


GENERATORS = {"arithmetic_cot": arithmetic_cot, "arithmetic_answers": arithmetic_answers}
