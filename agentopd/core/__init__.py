"""Core records: the typed, frozen data that flows through every layer (read this first).

`Task` (a released task) -> an env's `TurnInfo` per step -> the runner's `TurnRecord` and
`Episode` (token-in / token-out) -> a teacher's `TrainRow` with its `TeacherSignal` -> the learner.
`Signal` names what a teacher gives and an objective needs. Nothing here imports torch, a model
or an env; every other layer imports this one.
"""

from agentopd.core.capabilities import Signal
from agentopd.core.rows import TeacherSignal, TrainRow, episode_row
from agentopd.core.turn_info import EnvContractError, TurnInfo
from agentopd.core.types import Episode, Message, StopReason, Task, ToolCall, ToolResult, TurnRecord

__all__ = ["EnvContractError", "Episode", "Message", "Signal", "StopReason", "Task", "TeacherSignal",
           "ToolCall", "ToolResult", "TrainRow", "TurnInfo", "TurnRecord", "episode_row"]
