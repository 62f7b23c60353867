"""The `agentopd` command line."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(help="On-policy distillation for multi-turn tool-using LLM agents.",
                  no_args_is_help=True, add_completion=False)
console = Console()


@contextmanager
def _user_errors():
    """A user error (bad id, bad config) is one line that says what would work, never a traceback."""
    from agentopd.core.config import UserError

    try:
        yield
    except (UserError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        console.print(f"[red]error:[/] {e.code}", soft_wrap=True)
        raise typer.Exit(2) from None


@app.command("eval")
def eval_cmd(
    env: str = typer.Option(..., help="Env id (agentopd/Calc-v0), module:EnvId, or class:pkg.module:Class."),
    model: str = typer.Option("hf:smollm2-135m", help="hf:<name-or-path>, openai:<model>@<base_url> (a served "
                              "model: vLLM or agentopd serve), or 'oracle'."),
    split: str = typer.Option("test", help="Task split: train or test."),
    n: Optional[int] = typer.Option(None, help="Evaluate the first N tasks (default: all)."),  # noqa: UP045
    seed: int = typer.Option(0, help="Sampling and env seed."),
    out: Optional[str] = typer.Option(None, help="Write episodes.jsonl and summary.json here."),  # noqa: UP045
    temperature: float = typer.Option(0.0, help="Sampling temperature (0 = greedy)."),
    max_new_tokens: int = typer.Option(256, help="Per-turn token cap."),
    batch_size: int = typer.Option(64, help="Rows the sampler keeps live; a finished row's place goes to the next waiting turn."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    dtype: str = typer.Option("auto", help="auto (bf16 on CUDA, and on a CPU with native bf16 units where it "
                              "measures faster; fp32 otherwise), float32 or bfloat16."),
    continuous_batching: bool = typer.Option(True, help="An episode's next turn joins the batch as soon as its "
                                             "env answers (off: every turn waits for the slowest row)."),
    sandbox: str = typer.Option("auto", help="auto, or strict: refuse to run model-written code without namespaces."),
    k: int = typer.Option(1, "--k", help="Also report pass@K: the unbiased estimate (Chen et al. 2021) that at least "
                          "one of K samples of a task succeeds; K > 1 needs --temperature > 0."),
    samples: int = typer.Option(0, help="Samples (episodes) per task, >= K (0 = K); more than K lowers the "
                                "variance of pass@K."),
    stop_repeats: int = typer.Option(3, help="End an episode once it has made the same tool call (name and "
                                     "arguments) N times (stop reason 'loop'); 0 = never."),
    renderer: str = typer.Option("auto", help="Chat format: auto (the tokenizer's family, else its HF template), "
                                 "qwen3, qwen3-nothink, qwen2.5, llama3, smollm, chatml or hf."),
    tool_format: str = typer.Option("hermes", help="Tool-call format the env asks for and parses: hermes or "
                                    "llama3_json."),
    env_pool: str = typer.Option("threads", help="Where envs live and step: threads (this process) or ray (Ray "
                                 "actors; pip install 'ray>=2.40')."),
    env_step_timeout: float = typer.Option(300.0, help="Seconds an env step may take before its episode ends "
                                           "with stop reason error (0 = no limit)."),
    resume: bool = typer.Option(False, help="Continue the unfinished eval in --out: keep its finished episodes "
                                "(written as each ends) and play only the rest, with the same draws."),
) -> None:
    """Benchmark an agent on a released task split: success, per-turn success, tool errors."""
    from agentopd.recipes.eval import EvalConfig, run_eval

    cfg = EvalConfig(env=env, model=model, split=split, n=n, seed=seed, out=out, temperature=temperature,
                     max_new_tokens=max_new_tokens, batch_size=batch_size, device=device, dtype=dtype,
                     continuous_batching=continuous_batching, sandbox=sandbox, k=k, samples=samples,
                     stop_repeats=stop_repeats, renderer=renderer, tool_format=tool_format, env_pool=env_pool,
                     env_step_timeout=env_step_timeout, resume=resume)
    with _user_errors():
        run_eval(cfg, console)


@app.command("envs")
def envs_cmd() -> None:
    """List the registered agentopd environments and their task counts."""
    from rich.table import Table

    from agentopd.envs.registry import agentopd_env_ids, env_attr, load_plugins, make_env

    table = Table(title="agentopd environments")
    for col in ("id", "family", "train", "test", "turn budget"):
        table.add_column(col)
    import gymnasium as gym

    load_plugins()
    for env_id in agentopd_env_ids():
        counts = []
        for split in ("train", "test"):
            try:
                e = make_env(env_id, split=split)
                counts.append(str(len(env_attr(e, 'tasks'))))
                family = getattr(e.unwrapped, "family", "?")
                e.close()
            except Exception as ex:  # noqa: BLE001 - listed, not fatal
                counts.append(f"error: {ex}")
                family = "?"
        table.add_row(env_id, family, *counts, str(gym.spec(env_id).max_episode_steps))
    console.print(table)


@app.command("check-env")
def check_env_cmd(
    env: str = typer.Argument(..., help="Env id, module:EnvId, or class:pkg.module:Class."),
    max_tasks: Optional[int] = typer.Option(None, help="Check the oracle on at most N tasks per split."),  # noqa: UP045
) -> None:
    """Check an env: API and spaces, seeded determinism, tool-error handling, oracle on every task."""
    from agentopd.envs.checker import check_env

    with _user_errors():
        problems = check_env(env, max_tasks=max_tasks, log=console.print)
    if problems:
        for p in problems:
            console.print(f"[red]FAIL[/] {p}")
        raise typer.Exit(1)
    console.print(f"[green]OK[/] {env}")


def _train_command():
    """Build `agentopd train` from TrainConfig: one flag per field, help from its docstring."""
    import dataclasses
    import inspect
    import typing

    from agentopd.core.config import field_docs
    from agentopd.recipes.config import TrainConfig

    docs = field_docs(TrainConfig)
    hints = typing.get_type_hints(TrainConfig)
    params = [inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],  # noqa: UP045
                                default=typer.Option(None, "--config", help="JSON or TOML file of TrainConfig fields."))]
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if hints[f.name] is bool else [flag]
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[hints[f.name]],  # noqa: UP045
            default=typer.Option(None, *decls, help=f"{docs.get(f.name, '')} [default: {f.default}]")))

    def train(**kwargs) -> None:
        from agentopd.core.config import UserError, load_config
        from agentopd.recipes import train as run_recipe
        from agentopd.recipes.common import preflight

        with _user_errors():
            cfg = load_config(TrainConfig, kwargs.pop("config"), **kwargs)
            preflight(cfg)
        try:
            run_recipe(cfg, console)
        except UserError as e:  # found while loading (a hub id that is not there, a tokenizer mismatch)
            console.print(f"[red]error:[/] {e}", soft_wrap=True)
            raise typer.Exit(2) from None

    train.__signature__ = inspect.Signature(params)
    train.__doc__ = ("Train a student by on-policy distillation: rollouts -> teacher relabel -> loss -> "
                     "optimizer step, with per-turn metrics, held-out evals and resumable checkpoints.")
    return train


app.command("train")(_train_command())


@app.command("doctor")
def doctor_cmd() -> None:
    """What this machine gives agentopd: the sandbox mode and each guard, torch, dtype units, the model cache."""
    import platform

    import torch
    import transformers
    from rich.table import Table

    from agentopd.inference.embedded import cache_dir
    from agentopd.tools.python_sandbox import STRICT_MODES, sandbox_info, strict

    info = sandbox_info()
    table = Table(title=f"sandbox mode: {info.mode}" + (" (strict)" if strict() else ""))
    table.add_column("guard")
    table.add_column("held", justify="center")
    for g in info.guards:
        table.add_row(g, "[green]yes[/]")
    for g in info.missing:
        table.add_row(g, "[red]no[/]")
    console.print(table)
    for t in info.tried:
        console.print(f"stronger mode not available: {t}")
    if info.mode not in STRICT_MODES:
        console.print("[yellow]--sandbox strict would refuse to run model-written code here[/]")
    from agentopd.inference.dtypes import (
        cpu_bf16_units,
        cpu_matmul_seconds,
        dtype_name,
        resolve_dtype,
    )

    bf16 = cpu_bf16_units()
    console.print(f"python {platform.python_version()}, torch {torch.__version__}, transformers "
                  f"{transformers.__version__}, cuda: {torch.cuda.is_available()}, CPU bf16 units: "
                  f"{', '.join(bf16) or 'none'}; model cache: {cache_dir()}")
    t = cpu_matmul_seconds()
    console.print(f"--dtype auto on cpu: {dtype_name(resolve_dtype('auto', 'cpu'))} (small-model matmuls: fp32 "
                  f"{t['float32'] * 1e3:.0f} ms, bf16 {t['bfloat16'] * 1e3:.0f} ms"
                  + ("" if bf16 else "; without native units bf16 is never chosen") + ")")


@app.command("serve")
def serve_cmd(
    model: str = typer.Option("hf:smollm2-135m", help="hf:<name-or-path> to serve."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port."),
    name: Optional[str] = typer.Option(None, help="Model name clients use (default: the spec's name)."),  # noqa: UP045
    max_logprobs: int = typer.Option(20, help="Largest top-k of logprobs and prompt_logprobs a request may ask for."),
    dtype: str = typer.Option("auto", help="auto, float32 or bfloat16."),
    allow_faults: bool = typer.Option(False, help="Enable POST /admin/faults (scripted 429/500/slow/malformed/down "
                                      "replies, for testing clients)."),
    tool_call_parser: Optional[str] = typer.Option(None, help="hermes: chat replies carry their <tool_call> "  # noqa: UP045
                                                   "blocks as structured tool_calls (as vLLM's parser does)."),
) -> None:
    """Serve a transformers model over an OpenAI-compatible API (completions with token ids and vLLM's
    prompt_logprobs, chat, /tokenize): a local teacher or student server for tests and small runs."""
    try:
        from agentopd.inference.server import serve
    except ImportError as e:
        console.print(f"[red]error:[/] agentopd serve needs {e.name}: pip install 'agentopd[serve]'")
        raise typer.Exit(2) from None
    with _user_errors():
        serve(model, host=host, port=port, name=name, dtype=dtype, max_logprobs=max_logprobs, allow_faults=allow_faults,
              tool_call_parser=tool_call_parser)


@app.command("report")
def report_cmd(run_dir: str = typer.Argument(..., help="A run directory written by agentopd train.")) -> None:
    """Write PNG plots (per-turn KL heatmap, per-turn success start vs end, learning curves) and a summary."""
    from agentopd.metrics.report import write_report

    with _user_errors():
        paths = write_report(run_dir)
    for path in paths:
        console.print(f"wrote {path}")


if __name__ == "__main__":
    app()
