"""Demonstrations for the SFT baseline: expert episodes rendered as the student would see them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym

from agentopd.oracle_agent import oracle_episode
from agentopd.render import Conversation, Renderer
from agentopd.rows import TrainRow
from agentopd.types import Episode, TurnRecord


def oracle_demo_episodes(make_env: Callable[[], gym.Env], task_ids: Sequence[str], seeds: Sequence[int],
                         tokenizer) -> list[Episode]:
    """Oracle episodes, tokenized with the student's renderer (canonical ids + end-of-turn)."""
    renderer = Renderer(tokenizer)
    out = []
    for task_id, seed in zip(task_ids, seeds):
        ep = oracle_episode(make_env, task_id, seed)
        msgs = list(ep.messages)
        first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        conv = Conversation.start(renderer, msgs[:first])
        turns, i, k = [], first, 0
        while i < len(msgs):
            text = msgs[i]["content"]
            ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
            start, end, _ = conv.add_assistant(ids, [0.0] * len(ids))
            src = ep.turns[k]
            turns.append(TurnRecord(k, start, end, text, src.tool_calls, src.tool_results, src.request_index,
                                    src.oracle_ok, src.reward, "stop"))
            j = i + 1
            while j < len(msgs) and msgs[j]["role"] != "assistant":
                j += 1
            if j > i + 1 or j < len(msgs):
                if msgs[i + 1 : j]:
                    conv.add_observation(msgs[i + 1 : j])
            i, k = j, k + 1
        out.append(Episode(ep.env_id, ep.task_id, seed, tuple(conv.token_ids), tuple(conv.logprobs),
                           tuple(conv.loss_mask), tuple(turns), tuple(conv.messages), ep.reward, ep.success,
                           ep.stop_reason, ep.request_success))
    return out


def demo_rows(episodes: Sequence[Episode], successful_only: bool = True) -> list[TrainRow]:
    """Each demonstration episode as one row; loss on its assistant tokens."""
    from agentopd.teachers import episode_row

    return [episode_row(ep, i) for i, ep in enumerate(episodes) if ep.success or not successful_only]
