"""The built-in preference set: short instructions whose answers a program can check.

Each task is a prompt with a correct, compliant answer (chosen) and a realistic failure (rejected). The
failures are systematic rather than random, so a few dozen DPO steps can learn them: a wrong number or
yes/no, a format ignored (capital letters, JSON with a given key, a numbered list, one word), a length limit
broken, or a preamble and rambling where a bare answer was asked for. Responses stay under about 40 tokens so
that a CPU can train on them.

Every prompt determines its answer, so `verify` can score any completion from the prompt alone, which is what
on-policy training needs. Train and held-out sets (`builtin_split`) use disjoint facts, list categories and
numbers above 9. The held-out pairs (`builtin_held_out`) are one fixed set whatever the training seed, so that
`train` (its held-out split) and `eval --data builtin` score the same pairs.
"""

from __future__ import annotations

import json
import random
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace

from directalign.data.types import PreferenceRecord
from directalign.errors import ConfigError

FACTS: dict[str, str] = {
    "the capital of France": "Paris",
    "the capital of Japan": "Tokyo",
    "the capital of Italy": "Rome",
    "the capital of Egypt": "Cairo",
    "the capital of Spain": "Madrid",
    "the capital of Germany": "Berlin",
    "the capital of Canada": "Ottawa",
    "the capital of Kenya": "Nairobi",
    "the capital of Peru": "Lima",
    "the capital of Norway": "Oslo",
    "the capital of Australia": "Canberra",
    "the largest planet in the solar system": "Jupiter",
    "the planet closest to the Sun": "Mercury",
    "the chemical symbol for gold": "Au",
    "the chemical symbol for iron": "Fe",
    "the opposite of hot": "cold",
    "the opposite of up": "down",
    "the opposite of early": "late",
    "the opposite of north": "south",
    "the color of a ripe banana": "yellow",
    "the color of grass": "green",
    "the color of snow": "white",
    "the largest ocean on Earth": "Pacific",
    "the longest river in Africa": "Nile",
    "the tallest mountain on Earth": "Everest",
    "the plural of mouse": "mice",
    "the plural of child": "children",
    "the past tense of go": "went",
    "the past tense of eat": "ate",
    "the animal known as the king of the jungle": "lion",
    "the main language of Brazil": "Portuguese",
    "the currency of Japan": "yen",
    "the author of Hamlet": "Shakespeare",
    "the first element of the periodic table": "hydrogen",
    "the star at the center of our solar system": "Sun",
    "the fastest land animal": "cheetah",
    "the largest hot desert": "Sahara",
    "the season after winter": "spring",
    "the month after March": "April",
    "the day after Monday": "Tuesday",
    "the hardest natural substance": "diamond",
    "the organ that pumps blood": "heart",
}

_CATEGORY_TEXT = """
fruits: apple banana cherry grape mango pear peach plum lemon lime kiwi melon strawberry pineapple apricot fig
colors: red blue green yellow purple pink brown black white gray violet
animals: dog cat horse cow lion tiger elephant giraffe zebra monkey rabbit bear wolf fox deer sheep goat
vegetables: carrot potato onion tomato broccoli cabbage lettuce spinach cucumber pepper garlic celery pea
countries: France Japan Brazil Canada Egypt India Mexico Italy Spain Germany Kenya Peru Norway China Chile
sports: soccer tennis golf hockey baseball basketball cricket rugby volleyball swimming boxing cycling skiing
instruments: piano guitar violin drum flute trumpet cello harp saxophone clarinet trombone banjo ukulele
birds: eagle sparrow robin owl parrot penguin pigeon crow swan duck hawk falcon flamingo ostrich pelican
planets: Mercury Venus Earth Mars Jupiter Saturn Uranus Neptune
"""
CATEGORIES: dict[str, tuple[str, ...]] = {
    name: tuple(items.split()) for name, items in (line.split(":") for line in _CATEGORY_TEXT.strip().splitlines())
}
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
JSON_KEYS = ("answer", "result", "value")
_MAX_TRIES = 64  # draws per slot before a family counts as out of new prompts
BUILTIN_TRAIN_PAIRS = 192  # TrainConfig.builtin_train_pairs' default
BUILTIN_EVAL_PAIRS = 64  # TrainConfig.builtin_eval_pairs' default, and eval --data builtin's
HELD_OUT_SEED = 42  # TrainConfig.seed's default: the held-out pairs that runs before this constant scored


@dataclass(frozen=True)
class BuiltinTask:
    """One verifiable instruction and its chosen/rejected responses.

    kind: "arithmetic", "capitals", "json", "one_word", "numbered_list", "word_count" or "yes_no".
    answer: the expected content: a number, a fact, "yes"/"no", or the category a list draws from.
    count: items asked for (list kinds); key: the JSON key asked for (json kind).
    chosen, rejected: the response pair; empty for a task rebuilt from its prompt by `task_from_prompt`.
    """

    kind: str
    prompt: str
    answer: str
    count: int = 0
    key: str = ""
    chosen: str = ""
    rejected: str = ""


def _in_pool(subject: str, pool: str) -> bool:
    """Whether a subject ("number:37", "fact:...", "category:birds") belongs to pool "train", "eval" or "all".

    About a quarter of subjects are held out, chosen by a fixed hash so the split never depends on the seed.
    """
    held_out = zlib.crc32(subject.encode()) % 4 == 0
    return pool == "all" or held_out == (pool == "eval")


def _draw_number(rng: random.Random, pool: str, low: int, high: int) -> int:
    while True:
        n = rng.randint(low, high)
        if _in_pool(f"number:{n}", pool):
            return n


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


# Specs: the fields a prompt determines. Generation and `task_from_prompt` both build tasks through these.


def _arithmetic_spec(a: int, op: str, b: int) -> BuiltinTask:
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return BuiltinTask("arithmetic", f"What is {a} {op} {b}? Reply with just the number.", str(value))


def _fact_spec(kind: str, question: str, key: str = "") -> BuiltinTask:
    instruction = {
        "capitals": "Answer in all capital letters.",
        "json": f'Reply in JSON with the key "{key}".',
        "one_word": "Answer in one word.",
    }[kind]
    return BuiltinTask(kind, f"What is {question}? {instruction}", FACTS[question], key=key)


def _list_spec(kind: str, category: str, count: int) -> BuiltinTask:
    if category not in CATEGORIES:
        raise KeyError(category)  # as FACTS[question] does for an unknown fact
    word = NUMBER_WORDS[count]
    if kind == "numbered_list":
        prompt = f"Name {word} {category} as a numbered list."
    else:
        prompt = f"Name {word} {category}, in exactly {word} words."
    return BuiltinTask(kind, prompt, category, count=count)


def _yes_no_spec(a: int, b: int | None) -> BuiltinTask:
    if b is None:
        return BuiltinTask("yes_no", f"Is {a} an even number? Answer yes or no.", "yes" if a % 2 == 0 else "no")
    return BuiltinTask("yes_no", f"Is {a} greater than {b}? Answer yes or no.", "yes" if a > b else "no")


# Draws: a random spec from the pool plus a chosen answer and a failure of a kind a model can learn to avoid.


def _draw_arithmetic(rng: random.Random, pool: str) -> BuiltinTask:
    op = rng.choice("+-*")
    a, b = _draw_number(rng, pool, 11, 99), _draw_number(rng, pool, 11, 99)
    if op == "-":
        a, b = max(a, b), min(a, b)  # no negative answers
    elif op == "*":
        b = rng.randint(2, 9)  # single-digit multipliers are shared by both pools
    spec = _arithmetic_spec(a, op, b)
    right = int(spec.answer)
    wrong = right + rng.choice((-10, -2, -1, 1, 2, 10))  # a dropped carry, or off by one or two
    rejected = rng.choice(
        (
            str(wrong),
            f"The answer is {wrong}.",
            f"Let me calculate: {a} {op} {b} = {wrong}.",
            f"Sure! {a} {op} {b} = {right}.",
        )
    )
    return replace(spec, chosen=str(right), rejected=rejected)


def _draw_fact(kind: str) -> Callable[[random.Random, str], BuiltinTask]:
    def draw(rng: random.Random, pool: str) -> BuiltinTask:
        question = rng.choice([q for q in FACTS if _in_pool(f"fact:{q}", pool)])
        spec = _fact_spec(kind, question, key=rng.choice(JSON_KEYS) if kind == "json" else "")
        answer, sentence = spec.answer, f"{_capitalize(question)} is {spec.answer}."
        if kind == "capitals":
            return replace(spec, chosen=answer.upper(), rejected=rng.choice((_capitalize(answer), sentence)))
        if kind == "json":
            other_key = rng.choice([k for k in JSON_KEYS if k != spec.key])
            failures = (answer, sentence, json.dumps({other_key: answer}))
            return replace(spec, chosen=json.dumps({spec.key: answer}), rejected=rng.choice(failures))
        failures = (
            sentence,
            f"I think the answer is {answer}, but I am not completely sure.",
            f"Great question! {sentence}",
        )
        return replace(spec, chosen=_capitalize(answer), rejected=rng.choice(failures))

    return draw


def _draw_list(kind: str) -> Callable[[random.Random, str], BuiltinTask]:
    def draw(rng: random.Random, pool: str) -> BuiltinTask:
        category = rng.choice([c for c in CATEGORIES if _in_pool(f"category:{c}", pool)])
        spec = _list_spec(kind, category, rng.randint(2, 6))
        items = rng.sample(CATEGORIES[category], spec.count + 2)
        right, too_many = items[: spec.count], items[: spec.count + rng.randint(1, 2)]
        inline = f"{_capitalize(', '.join(right))}."
        rambling = f"Sure! Here are {NUMBER_WORDS[spec.count]} {category}: {', '.join(right[:-1])} and {right[-1]}."
        if kind == "numbered_list":
            chosen = "\n".join(f"{i}. {_capitalize(item)}" for i, item in enumerate(right, 1))
            numbered_too_many = "\n".join(f"{i}. {_capitalize(item)}" for i, item in enumerate(too_many, 1))
            failures = (inline, "\n".join(f"- {_capitalize(item)}" for item in right), numbered_too_many)
            return replace(spec, chosen=chosen, rejected=rng.choice(failures))
        failures = (rambling, f"{_capitalize(', '.join(too_many))}.", f"{inline[:-1]} are {category} I like.")
        return replace(spec, chosen=inline, rejected=rng.choice(failures))

    return draw


def _draw_yes_no(rng: random.Random, pool: str) -> BuiltinTask:
    a = _draw_number(rng, pool, 11, 999)
    if rng.random() < 0.5:
        spec = _yes_no_spec(a, None)
        reason = f"{a} {'is' if spec.answer == 'yes' else 'is not'} divisible by 2"
    else:
        b = _draw_number(rng, pool, 11, 999)
        spec = _yes_no_spec(a, b)
        reason = f"{a} is {'greater' if a > b else 'less'} than {b}"
    right, wrong = _capitalize(spec.answer), "No" if spec.answer == "yes" else "Yes"
    failures = (wrong, f"{right}, because {reason}.", f"{wrong}, I think, but it is hard to tell.")
    return replace(spec, chosen=right, rejected=rng.choice(failures))


_FAMILIES: tuple[Callable[[random.Random, str], BuiltinTask], ...] = (
    _draw_arithmetic,
    _draw_fact("capitals"),
    _draw_fact("json"),
    _draw_fact("one_word"),
    _draw_list("numbered_list"),
    _draw_list("word_count"),
    _draw_yes_no,
)


# Checks: (content right, format followed) for a completion.

_WORD = re.compile(r"[A-Za-z]+")


def _mentions(text: str, answer: str) -> bool:
    return re.search(rf"\b{re.escape(answer)}\b", text, re.IGNORECASE) is not None


def _category_items(text: str, category: str) -> set[str]:
    """Distinct items of the category named in text, counting simple plurals ("peaches", "cherries")."""
    vocabulary = {item.lower() for item in CATEGORIES[category]}
    found = set()
    for word in (w.lower() for w in _WORD.findall(text)):
        for stem in (word, word.removesuffix("s"), word.removesuffix("es"), word.removesuffix("ies") + "y"):
            if stem in vocabulary:
                found.add(stem)
                break
    return found


def _check_arithmetic(task: BuiltinTask, text: str) -> tuple[bool, bool]:
    numbers = re.findall(r"-?\d+", text)
    return bool(numbers) and numbers[-1] == task.answer, re.fullmatch(r"-?\d+\.?", text) is not None


def _check_capitals(task: BuiltinTask, text: str) -> tuple[bool, bool]:
    return _mentions(text, task.answer), any(c.isalpha() for c in text) and text == text.upper()


def _check_json(task: BuiltinTask, text: str) -> tuple[bool, bool]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    return _mentions(text, task.answer), isinstance(parsed, dict) and list(parsed) == [task.key]


def _check_one_word(task: BuiltinTask, text: str) -> tuple[bool, bool]:
    return _mentions(text, task.answer), len(text.split()) == 1


def _check_numbered_list(task: BuiltinTask, text: str) -> tuple[bool, bool]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    numbered = [re.match(rf"{i}[.)]\s+\S", line) is not None for i, line in enumerate(lines, 1)]
    return len(_category_items(text, task.answer)) == task.count, bool(lines) and all(numbered)


def _check_word_count(task: BuiltinTask, text: str) -> tuple[bool, bool]:
    return len(_category_items(text, task.answer)) == task.count, len(text.split()) == task.count


def _check_yes_no(task: BuiltinTask, text: str) -> tuple[bool, bool]:
    words = _WORD.findall(text.lower())
    return bool(words) and words[0] == task.answer, text.lower().rstrip(".!") in ("yes", "no")


_CHECKS: dict[str, Callable[[BuiltinTask, str], tuple[bool, bool]]] = {
    "arithmetic": _check_arithmetic,
    "capitals": _check_capitals,
    "json": _check_json,
    "one_word": _check_one_word,
    "numbered_list": _check_numbered_list,
    "word_count": _check_word_count,
    "yes_no": _check_yes_no,
}
KINDS: tuple[str, ...] = tuple(_CHECKS)  # every task kind, in the order the families take turns

_COUNTS = {word: n for n, word in NUMBER_WORDS.items()}
# Prompt shapes, each with the spec builder that its groups feed; they mirror the *_spec functions above.
_PARSERS: tuple[tuple[str, Callable[..., BuiltinTask]], ...] = (
    (
        r"What is (\d+) ([-+*]) (\d+)\? Reply with just the number\.",
        lambda a, o, b: _arithmetic_spec(int(a), o, int(b)),
    ),
    (r"What is (.+)\? Answer in all capital letters\.", lambda q: _fact_spec("capitals", q)),
    (r'What is (.+)\? Reply in JSON with the key "(\w+)"\.', lambda q, k: _fact_spec("json", q, k)),
    (r"What is (.+)\? Answer in one word\.", lambda q: _fact_spec("one_word", q)),
    (r"Name (\w+) (\w+) as a numbered list\.", lambda n, c: _list_spec("numbered_list", c, _COUNTS[n])),
    (r"Name (\w+) (\w+), in exactly \1 words\.", lambda n, c: _list_spec("word_count", c, _COUNTS[n])),
    (r"Is (\d+) an even number\? Answer yes or no\.", lambda a: _yes_no_spec(int(a), None)),
    (r"Is (\d+) greater than (\d+)\? Answer yes or no\.", lambda a, b: _yes_no_spec(int(a), int(b))),
)


def task_from_prompt(prompt: str) -> BuiltinTask:
    """Rebuild the task (kind, answer, count, key) a built-in prompt asks for; chosen/rejected stay empty.

    Raises ValueError for a prompt the built-in set does not generate.
    """
    for pattern, build in _PARSERS:
        if match := re.fullmatch(pattern, prompt.strip()):
            try:
                return build(*match.groups())
            except KeyError:
                break  # the shape matched but the fact, category or count is not one of ours
    raise ValueError(f"not a built-in task prompt: {prompt!r}")


def verify(task: BuiltinTask | PreferenceRecord | str, completion: str) -> float:
    """Score a completion in [0, 1]: half for the right content, half for following the instruction's format.

    task may be a BuiltinTask, a built-in PreferenceRecord (its last prompt message is parsed) or the prompt
    text. Every chosen response scores 1.0 and every rejected one 0.5 or 0.0. List contents are checked
    against the category's word list, so an item outside it (a fruit not in CATEGORIES["fruits"]) counts as
    wrong.
    """
    content_ok, format_ok = check(task, completion)
    return (float(content_ok) + float(format_ok)) / 2


def check(task: BuiltinTask | PreferenceRecord | str, completion: str) -> tuple[bool, bool]:
    """(content right, format followed): the two halves `verify` averages, for reporting them apart."""
    if isinstance(task, PreferenceRecord):
        task = task.prompt[-1]["content"]
    if isinstance(task, str):
        task = task_from_prompt(task)
    return _CHECKS[task.kind](task, completion.strip())


# Generation.


def _generate(n: int, seed: int, pool: str) -> list[BuiltinTask]:
    """n tasks with distinct prompts from pool, families in turn; a family out of new prompts drops out."""
    if n < 0:
        raise ConfigError(f"the number of built-in examples must be >= 0, got {n}")
    rng = random.Random(f"directalign-builtin:{pool}:{seed}")  # str seeds are stable across processes
    families, tasks, seen = list(_FAMILIES), [], set()
    while len(tasks) < n:
        if not families:
            raise ConfigError(f"the built-in set has {len(tasks)} distinct {pool} prompts; {n} were asked for")
        draw = families[len(tasks) % len(families)]
        task = next((t for t in (draw(rng, pool) for _ in range(_MAX_TRIES)) if t.prompt not in seen), None)
        if task is None:
            families.remove(draw)
            continue
        seen.add(task.prompt)
        tasks.append(task)
    return tasks


def to_record(task: BuiltinTask, source: str) -> PreferenceRecord:
    """A paired record: the prompt as one user message, chosen then rejected as assistant messages."""
    return PreferenceRecord(
        prompt=[{"role": "user", "content": task.prompt}],
        responses=[
            [{"role": "assistant", "content": task.chosen}],
            [{"role": "assistant", "content": task.rejected}],
        ],
        pairs=[(0, 1)],
        source=source,
    )


def builtin_tasks(n: int, seed: int = 0) -> list[BuiltinTask]:
    """n tasks with distinct prompts, a fixed function of (n, seed): the global RNG is not used."""
    return _generate(n, seed, "all")


def builtin_records(n: int, seed: int = 0) -> list[PreferenceRecord]:
    """The records of `builtin_tasks(n, seed)`, with source "builtin:<index>"."""
    return [to_record(task, f"builtin:{i}") for i, task in enumerate(builtin_tasks(n, seed))]


def builtin_split(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[PreferenceRecord], list[PreferenceRecord]]:
    """Train records drawn with seed, and the held-out records `builtin_held_out(n_eval)`.

    Their prompts share no fact, list category or number above 9: about a quarter of the numbers, facts and
    categories are held out, by a fixed hash. Sources are "builtin:train:<index>" and "builtin:eval:<index>".
    """
    train = [to_record(t, f"builtin:train:{i}") for i, t in enumerate(_generate(n_train, seed, "train"))]
    return train, builtin_held_out(n_eval)


def builtin_held_out(n: int = BUILTIN_EVAL_PAIRS) -> list[PreferenceRecord]:
    """The built-in held-out pairs that `train` and `eval --data builtin` both score.

    A fixed function of n, independent of any training seed; the first m < n of them are
    `builtin_held_out(m)`, so `eval --limit m` scores a prefix of the training run's held-out set.
    """
    tasks = _generate(n, HELD_OUT_SEED, "eval")
    return [to_record(t, f"builtin:eval:{i}") for i, t in enumerate(tasks)]
