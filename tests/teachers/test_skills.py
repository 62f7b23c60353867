"""Skill-SD's skill library and writers: UCB retrieval, eviction, dedup, persistence, rule and LLM
writers on episodes played with the Calc oracle and scripted students."""

import json
import math
import random
from dataclasses import replace

import pytest
from helpers_envs import ScriptedPolicy

from agentopd.core.types import StopReason
from agentopd.envs.registry import make_env
from agentopd.inference.sampling import SamplingParams
from agentopd.rollout.runner import RolloutConfig, run_episodes
from agentopd.teachers.skills import (
    LLMWriter,
    RuleWriter,
    SkillCard,
    SkillLibrary,
    SkillWriter,
    expert_traces,
    first_json_object,
)
from agentopd.tools.core import format_tool_call

CALC = lambda: make_env("agentopd/Calc-v0", split="train")  # noqa: E731
CFG = RolloutConfig(SamplingParams(max_new_tokens=64))
JACKET = "calc-v1-train-0001"  # 121 * 30 / 100 -> 36.3, 121 - 36.3 -> 84.7
SUM = "calc-v1-train-0000"  # two requests: 580 + 936, then + 195


def calc(expr):
    return format_tool_call("calculator", {"expression": expr})


def card(task="t", k=0, text=None):
    text = text if text is not None else f"card {k}"
    return SkillCard(f"{task}#{k}", task, text, "none observed", (f"do {text}",))


def play(tokenizer, task, texts):
    (ep,) = run_episodes(CALC, ScriptedPolicy(tokenizer, texts), [task], [0], CFG)
    return ep


@pytest.fixture(scope="module")
def eps(tokenizer):
    """A solved episode, one that diverges at turn 2, one that loops, and the oracle's traces."""
    good = play(tokenizer, JACKET, [calc("121 * 30 / 100"), calc("121 - 36.3"), "Answer: 84.7"])
    div = play(tokenizer, JACKET, [calc("121 * 30 / 100"), calc("121 + 30"), "Answer: 151"])
    loop = play(tokenizer, SUM, [calc("1 + 1")])
    experts = expert_traces(CALC, [good, div, loop], tokenizer)
    assert good.success and not div.success and loop.stop_reason == StopReason.TURN_LIMIT
    assert set(experts) == {JACKET, SUM} and all(e.success for e in experts.values())
    return {"good": good, "div": div, "loop": loop, "experts": experts}


# ---------------------------------------------------------------------------------------------
# the library


def test_ucb_takes_unseen_cards_oldest_first_then_the_formula():
    lib = SkillLibrary(ucb_c=1.0)
    for k in range(3):
        assert lib.add(card(k=k))
    assert lib.retrieve("nope") is None
    order = []
    for reward in (1.0, 0.0, 0.5):  # each unseen card once, oldest first
        c = lib.retrieve("t")
        order.append(c.id)
        lib.record(c.id, reward)
    assert order == ["t#0", "t#1", "t#2"]
    # N = 3, n = 1 each: 1 + sqrt(ln 3) beats 0.5 + sqrt(ln 3) and 0 + sqrt(ln 3)
    assert lib.scores("t")["t#0"] == pytest.approx(1 + math.sqrt(math.log(3)))
    assert lib.retrieve("t").id == "t#0"
    lib.record("t#0", 1.0)
    # N = 4: t#0 = 1 + sqrt(ln4 / 2) = 1.833 > t#2 = 0.5 + sqrt(ln 4) = 1.677 > t#1 = 1.177
    assert lib.retrieve("t").id == "t#0"
    lib.record("t#0", 0.0)
    # N = 5: t#0 = 2/3 + sqrt(ln5 / 3) = 1.399 < t#2 = 0.5 + sqrt(ln 5) = 1.769
    s = lib.scores("t")
    assert s["t#0"] == pytest.approx(2 / 3 + math.sqrt(math.log(5) / 3))
    assert s["t#2"] == pytest.approx(0.5 + math.sqrt(math.log(5)))
    assert s["t#1"] == pytest.approx(math.sqrt(math.log(5)))
    assert lib.retrieve("t").id == "t#2"
    assert lib.uses("t#0") == (3, pytest.approx(2 / 3))
    # c = 0 is greedy on the mean; a new card is unseen and goes first whatever the scores
    assert SkillLibrary.from_json({**lib.to_json(), "ucb_c": 0.0}).retrieve("t").id == "t#0"
    lib.add(card(k=3))
    assert lib.retrieve("t").id == "t#3"


def test_exact_ties_go_to_the_oldest_or_to_the_rng():
    lib = SkillLibrary()
    lib.add(card(k=0))
    lib.add(card(k=1))
    lib.record("t#0", 0.5)
    lib.record("t#1", 0.5)
    assert {lib.retrieve("t").id for _ in range(5)} == {"t#0"}
    rng = random.Random(0)
    assert {lib.retrieve("t", rng).id for _ in range(40)} == {"t#0", "t#1"}


def test_record_and_stats():
    lib = SkillLibrary()
    assert lib.stats() == {"skills/cards": 0.0, "skills/tasks_with_cards": 0.0, "skills/mean_uses": 0.0,
                           "skills/unseen": 0.0, "skills/evicted": 0.0}
    lib.add(card("a", 0))
    lib.add(card("a", 1))
    lib.add(card("b", 0))
    lib.record("a#0", 1.0)
    lib.record("a#0", 0.0)
    lib.record("b#0", 1.0)
    st = lib.stats()
    assert st["skills/cards"] == 3 and st["skills/tasks_with_cards"] == 2
    assert st["skills/mean_uses"] == pytest.approx(1.0) and st["skills/unseen"] == 1
    assert all(k.startswith("skills/") for k in st)
    assert lib.uses("a#0") == (2, 0.5)
    with pytest.raises(KeyError, match="not in the library"):
        lib.record("a#9", 1.0)
    with pytest.raises(ValueError, match="not finite"):
        lib.record("a#0", float("nan"))


def test_a_full_task_evicts_its_worst_used_card_never_an_unused_one():
    lib = SkillLibrary(max_per_task=3)
    for k in range(3):
        lib.add(card(k=k))
    lib.record("t#0", 1.0)
    lib.record("t#1", 0.2)  # t#2 unused
    assert lib.add(card(k=3))
    assert [c.id for c in lib.cards("t")] == ["t#0", "t#2", "t#3"]
    lib.record("t#2", 1.0)  # t#0 and t#2 tie at 1.0: the older goes
    lib.record("t#3", 1.0)
    assert lib.add(card(k=4))
    assert [c.id for c in lib.cards("t")] == ["t#2", "t#3", "t#4"]
    assert lib.stats()["skills/evicted"] == 2
    # all unused: the oldest goes
    lib = SkillLibrary(max_per_task=2)
    for k in range(3):
        lib.add(card(k=k))
    assert [c.id for c in lib.cards("t")] == ["t#1", "t#2"]
    # ids stay unique after eviction
    assert lib.next_id("t") == "t#3" and lib.next_id("other") == "other#0"


def test_adding_the_same_three_fields_twice_is_a_no_op(tokenizer):
    lib = SkillLibrary()
    assert lib.add(card(k=0, text="same"))
    assert not lib.add(replace(card(k=1, text="same"), source="llm", step=7))
    assert len(lib) == 1 and lib.next_id("t") == "t#1"
    assert lib.add(card("u", 0, text="same"))  # another task may hold the same card
    with pytest.raises(ValueError, match="already in the library"):
        lib.add(card(k=0, text="different"))
    # the env's own card seeds a task that has none, and only then
    env = CALC()
    env.reset(options={"task": JACKET})
    seeded = lib.seed(JACKET, env.get_wrapper_attr("skill_card")())
    assert seeded is not None and seeded.source == "env" and seeded.id == f"{JACKET}#0"
    assert lib.retrieve(JACKET) == seeded
    assert lib.seed(JACKET, {**seeded.as_dict(), "success_analysis": "x"}) is None


def test_save_load_round_trip_retrieves_the_same_sequence(tmp_path):
    lib = SkillLibrary(max_per_task=3, ucb_c=0.7)
    for task in ("a", "b"):
        for k in range(4):
            lib.add(card(task, k))
    lib.record("a#1", 0.25)
    lib.record("a#2", 1.0)
    lib.record("b#3", 1 / 3)
    path = tmp_path / "skills.json"
    lib.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["skills.json"]  # no temporary file left
    again = SkillLibrary.load(path)
    assert again.to_json() == lib.to_json() and (again.max_per_task, again.ucb_c) == (3, 0.7)

    def drive(lb, rng):
        seq = []
        for i in range(30):
            task = "ab"[i % 2]
            c = lb.retrieve(task, rng)
            seq.append(c.id)
            lb.record(c.id, (sum(map(ord, c.id)) % 7) / 7 if i % 3 else 0.5)
        return seq

    assert drive(lib, random.Random(3)) == drive(again, random.Random(3))
    assert again.cards("a")[0] == lib.cards("a")[0]


def test_missing_file_is_empty_and_a_corrupt_one_is_a_one_line_error(tmp_path):
    empty = SkillLibrary.load(tmp_path / "none.json", max_per_task=2)
    assert len(empty) == 0 and empty.max_per_task == 2
    bad = tmp_path / "bad.json"
    for text in ("{not json", '{"version": 1, "cards": [{"card": {}}]}', "[1, 2]",
                 json.dumps({**SkillLibrary().to_json(), "cards": [{"card": {"id": "x"}, "age": 0}]})):
        bad.write_text(text)
        with pytest.raises(ValueError, match="bad.json: corrupt skill library") as e:
            SkillLibrary.load(bad)
        assert "\n" not in str(e.value)


def test_card_json_round_trip_and_validation():
    c = SkillCard("t#0", "t", "s", "m", ["a", "b"], "llm", 3)
    assert c.golden_workflow == ("a", "b")
    assert c.as_dict() == {"success_analysis": "s", "mistake_analysis": "m", "golden_workflow": ["a", "b"]}
    assert SkillCard.from_json(json.loads(json.dumps(c.to_json()))) == c
    with pytest.raises(ValueError, match="source"):
        SkillCard("t#0", "t", "s", "m", (), "oracle")
    with pytest.raises(ValueError, match="golden_workflow"):
        SkillCard.from_json({**c.to_json(), "golden_workflow": "a then b"})


# ---------------------------------------------------------------------------------------------
# writers


def _short(c: SkillCard, n=240):
    assert len(c.success_analysis) <= n and len(c.mistake_analysis) <= n
    assert all(len(s) <= 120 for s in c.golden_workflow)


def test_rule_writer_on_a_solved_episode(eps):
    good, expert = eps["good"], eps["experts"][JACKET]
    c = RuleWriter().write(good, None, 5, f"{JACKET}#0")
    assert isinstance(RuleWriter(), SkillWriter)
    assert (c.id, c.task_id, c.source, c.step) == (f"{JACKET}#0", JACKET, "rules", 5)
    assert c.success_analysis.startswith("Solved in 3 turns: ")
    assert 'calculator(expression="121 * 30 / 100") -> 36.3' in c.success_analysis
    assert c.mistake_analysis == "none observed"
    steps = ('calculator(expression="121 * 30 / 100")', 'calculator(expression="121 - 36.3")', "Answer: 84.7")
    assert c.golden_workflow == steps
    assert RuleWriter().write(good, expert, 5, "x").golden_workflow == steps
    _short(c)
    assert RuleWriter().write(replace(good, stop_reason=StopReason.ERROR), expert, 5, "x") is None


def test_rule_writer_names_tool_errors_it_recovered_from(tokenizer):
    ep = play(tokenizer, "calc-v1-train-0005", ["<tool_call>{broken</tool_call>", calc("8 + 2"), "Answer: 10"])
    assert ep.success and ep.tool_errors == 1
    c = RuleWriter().write(ep, None, 0, "x")
    assert c.mistake_analysis.startswith("None fatal; recovered from tool errors: ")


def test_rule_writer_on_a_loop(eps):
    loop, expert = eps["loop"], eps["experts"][SUM]
    c = RuleWriter().write(loop, expert, 1, "x")
    n = loop.num_turns
    assert f'Looped: called calculator(expression="1 + 1") {n} times.' in c.mistake_analysis
    assert f"Ran out of turns after {n}." in c.mistake_analysis
    assert c.golden_workflow == ('calculator(expression="580 + 936")', "Answer: 1516",
                                 'calculator(expression="1516 + 195")', "Answer: 1711")
    assert c.success_analysis.startswith("Not solved. The expert solves it in 4 turns")
    _short(c)


def test_rule_writer_names_the_first_divergence(eps):
    div, expert = eps["div"], eps["experts"][JACKET]
    assert [t.oracle_ok for t in div.turns] == [True, False, False]
    c = RuleWriter().write(div, expert, 2, "x")
    assert c.mistake_analysis.startswith('Turn 2 diverged: wrote calculator(expression="121 + 30"); '
                                         'the expert does calculator(expression="121 - 36.3").')
    assert "Final answer 'Answer: 151' was wrong." in c.mistake_analysis
    assert c.golden_workflow == tuple(RuleWriter().write(expert, None, 0, "e").golden_workflow)
    assert c.golden_workflow[-1] == "Answer: 84.7"
    # no expert trace: the oracle's actions up to and including the divergence
    c = RuleWriter().write(div, None, 2, "x")
    assert c.golden_workflow == ('calculator(expression="121 * 30 / 100")', 'calculator(expression="121 - 36.3")')
    assert "turn 2" in c.success_analysis
    _short(c)
    tiny = RuleWriter(max_chars=30).write(div, expert, 2, "x")
    assert len(tiny.mistake_analysis) == 30 and tiny.mistake_analysis.endswith("…")


CARD = {"success_analysis": "Take 30% of 121, subtract it.", "mistake_analysis": "Added instead of subtracting.",
        "golden_workflow": ["calculator(121 * 30 / 100)", "calculator(121 - 36.3)", "Answer: 84.7"]}


def test_llm_writer_parses_a_valid_reply_and_sees_the_divergence(eps):
    div, expert = eps["div"], eps["experts"][JACKET]
    prompts = []
    w = LLMWriter(lambda p: prompts.append(p) or json.dumps(CARD))
    c = w.write(div, expert, 4, "x#1")
    assert c.as_dict() == CARD and (c.source, c.step, c.id) == ("llm", 4, "x#1") and w.fallbacks == 0
    (p,) = prompts
    assert "A jacket costs $121" in p and "solved: no" in p
    assert 'Turn 2: calculator(expression="121 + 30") -> 151 [expert instead: calculator(expression="121 - 36.3")]' in p
    assert 'Turn 1: calculator(expression="121 * 30 / 100") -> 36.3\n' in p  # agreed: no expert shown
    loop_prompt = w.prompt(eps["loop"])
    assert loop_prompt.count("calculator(expression=\"1 + 1\")") == 1  # a loop is one line


def test_llm_writer_finds_json_in_a_code_fence_with_prose(eps):
    reply = "Sure {not json} here:\n```json\n" + json.dumps(CARD, indent=2) + "\n```\nHope that helps {"
    assert first_json_object(reply) == CARD
    w = LLMWriter(lambda p: reply)
    assert w.write(eps["div"], None, 0, "x").as_dict() == CARD and w.fallbacks == 0
    long = {**CARD, "mistake_analysis": "x" * 1000}
    assert len(LLMWriter(lambda p: json.dumps(long)).write(eps["div"], None, 0, "x").mistake_analysis) == 240


def test_llm_writer_falls_back_to_the_rules_on_garbage(eps):
    div, expert = eps["div"], eps["experts"][JACKET]
    rules = RuleWriter().write(div, expert, 3, "x")
    for reply in ("I cannot do that.", '{"success_analysis": 1, "mistake_analysis": "", "golden_workflow": []}',
                  '{"success_analysis": "a", "mistake_analysis": "b"}', "[1, 2, 3]"):
        w = LLMWriter(lambda p, reply=reply: reply)
        assert w.write(div, expert, 3, "x") == rules
        assert w.fallbacks == 1


def test_llm_writer_from_a_tiny_policy_returns_a_card(eps, tiny_policy, tokenizer):
    w = LLMWriter.from_policy(tiny_policy, tokenizer, max_new_tokens=16)
    c = w.write(eps["div"], eps["experts"][JACKET], 0, "x")
    assert isinstance(c, SkillCard) and c.source in ("llm", "rules") and w.fallbacks in (0, 1)
