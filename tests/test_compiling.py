"""torch.compile per run: clean caches between runs, bounded compile workers, compile time apart.

Usage: ``python -m pytest tests/test_compiling.py``

The runs compile with the ``aot_eager`` backend: Dynamo's caches, recompile limit and compile
callbacks, and AOT autograd's lazily compiled backward, are those of the default Inductor
backend, at a second of compile time where Inductor's C++ code generation takes half a minute
on 2 cores.
"""

from __future__ import annotations

import functools
import time

import pandas as pd
import pytest
import torch
import torch._dynamo
import torch._inductor.config as inductor_config
from torch._dynamo.callback import CallbackTrigger
from torch._dynamo.utils import counters

from results.tables import trial_rows
from trainables.compiling import CompileSession
from trainables.config import TrainConfig
from trainables.train import train


def test_a_session_times_compilations_bounds_compile_workers_and_hands_both_back() -> None:
    before = inductor_config.compile_threads
    with CompileSession(True, threads=1) as session:
        assert inductor_config.compile_threads == 1
        with torch._dynamo.callback_handler.install_callbacks(CallbackTrigger.DYNAMO, "0/0"):
            # A nested compilation (the backward inside a forward's) is not counted twice.
            with torch._dynamo.callback_handler.install_callbacks(
                    CallbackTrigger.LAZY_BACKWARD, "0/0"):
                time.sleep(0.05)
        spent = session.seconds
        assert 0.05 <= spent < 1.0 and session.timed
        time.sleep(0.02)
        assert session.seconds == spent  # only compilations count
    assert inductor_config.compile_threads == before
    assert session._start not in torch._dynamo.callback_handler.start_callbacks


def test_a_session_that_does_not_compile_touches_nothing() -> None:
    model = torch.nn.Linear(2, 2)
    with CompileSession(False) as session:
        assert session.compile(model) is model
    assert session.seconds == 0.0 and session.timed


@pytest.mark.slow  # ~10 s on 2 busy cores: two compiled runs at 32 px
def test_successive_compiled_runs_in_one_process_each_compile_from_a_clean_cache(
        data, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reused worker's trials: without a reset, the second trial's graphs pile onto the
    first's on the one compiled-module wrapper, hit the recompile limit (lowered here from 8 so
    that two trials reach it) and run eagerly, compiling nothing."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="aot_eager"))
    threads = torch.get_num_threads()
    # torch's config modules are patched with their own context manager: monkeypatch's undo
    # deletes the attribute, which hides the setting from every later reader in the process.
    with (torch._dynamo.config.patch(recompile_limit=4),
          inductor_config.patch(compile_threads=threads + 7)):  # the "whole node"
        frames, rows, seen_threads = _two_compiled_trials(data)
        assert inductor_config.compile_threads == threads + 7  # ...handed back after
    assert frames[0] > 0 and frames[1] == frames[0]
    assert seen_threads == [threads] * 2  # bounded by the run's threads...
    for epoch, row in rows:
        assert epoch["compile_seconds"] > 0 and row["compile_seconds"] == epoch["compile_seconds"]
        # The epoch's time is training only: compiling is the other part of its wall time.
        assert epoch["epoch_seconds"] + epoch["compile_seconds"] <= epoch["wall"]
        assert row["train_seconds"] == epoch["epoch_seconds"]


def test_a_run_without_compile_reports_no_compile_time(data) -> None:
    history: list[dict] = []
    config = TrainConfig(model="small_cnn", batch_size=16, image_size=16, split_ratio=0.75,
                         epochs=1)
    train(config, data, device="cpu", on_epoch=lambda m, s: history.append(m))
    assert history[-1]["compile_seconds"] == 0.0
    row, _ = trial_rows("s", "t", config.asdict(), pd.DataFrame(history), None)
    assert row["compile_seconds"] == 0.0


def _two_compiled_trials(data) -> tuple[list[int], list, list[int]]:
    """Frames compiled, (first epoch, trials row) and compile threads seen, of two trials."""
    frames, rows, seen_threads = [], [], []
    for model in ("small_cnn", "purba_cnn1"):  # both nn.Sequential, as a grid over models
        config = TrainConfig(model=model, batch_size=24, image_size=32, split_ratio=0.75,
                             epochs=1, compile=True)
        history: list[dict] = []
        ok, start = counters["frames"]["ok"], time.perf_counter()

        def report(metrics: dict, state: object, history: list = history,
                   start: float = start) -> None:
            history.append({**metrics, "wall": time.perf_counter() - start})
            seen_threads.append(inductor_config.compile_threads)

        train(config, data, device="cpu", on_epoch=report)
        frames.append(counters["frames"]["ok"] - ok)
        rows.append((history[0], trial_rows("s", model, config.asdict(),
                                            pd.DataFrame(history), None)[0]))
    return frames, rows, seen_threads
