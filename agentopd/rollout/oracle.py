"""The env's oracle as a message policy: the expert's next turn for whatever state each episode
is in, read through the wrapper stack (`get_wrapper_attr`), so a wrapper can override it."""

from __future__ import annotations

from collections.abc import Sequence

from agentopd.inference.sampling import MessageState, SamplingParams


class OraclePolicy:
    """Plays every episode with the env's expert (``--model oracle``, SFT demonstrations)."""

    def respond(self, states: Sequence[MessageState], params: SamplingParams) -> list[str]:
        return [s.env.get_wrapper_attr("oracle_action")() for s in states]
