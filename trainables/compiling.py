"""``torch.compile`` for one run: clean caches, bounded compile workers, compile time measured.

Usage:
    with CompileSession(config.compile, threads=torch.get_num_threads()) as compiling:
        forward = compiling.compile(model)          # the model itself when compiling is off
        ...
        compiling.seconds                           # wall seconds spent compiling so far

Three things go wrong with ``torch.compile`` in a worker that Tune reuses for trial after trial:

- Dynamo's compiled-code cache is keyed on code objects, and every compiled module's forward
  runs through one shared wrapper (and every ``nn.Sequential`` through one ``forward``). Each
  trial's graphs pile up on the same entries until ``torch._dynamo.config.recompile_limit``
  (8) is hit, after which that code runs eagerly for the rest of the process, with a single
  log line as notice. The session empties the caches at its start and its end
  (``torch.compiler.reset()``), so each run compiles as in a fresh process; the on-disk
  FX-graph and autograd caches survive, so repeating a configuration recompiles faster.
- Inductor starts its pool of compile workers once per process, sized by the machine's cores
  (``torch._inductor.config.compile_threads``, at most 32), not by the trial's share of them.
  The session sets it to ``threads`` before anything compiles; the Tune trainable has set
  torch's threads to the trial's CPUs. A reused worker keeps its CPUs, so the pool it started
  for its first trial fits the later ones.
- Compilation happens inside the first steps (and again at a new batch shape), so its time
  lands in the first epoch's. The session times every compilation through Dynamo's
  compile-start and compile-end callbacks (which also fire for the backward graph, compiled
  at the first backward), so the training loop reports it apart (``compile_seconds``) and
  subtracts it from the epoch's time.

Framework-free: ``trainables.train`` opens one session per run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class CompileSession:
    """Context around one run; see the module docstring. Nothing happens when not ``enabled``:
    ``compile`` returns the model and ``seconds`` stays 0.

    ``timed`` is False where this torch has no compile callbacks (before 2.5): ``seconds``
    then stays 0 and compile time stays in the epochs' time, as before.
    """

    def __init__(self, enabled: bool, threads: int | None = None) -> None:
        self.enabled = enabled
        self.threads = max(1, int(threads if threads is not None else torch.get_num_threads()))
        self._seconds = 0.0
        self._started: float | None = None
        self._lock = threading.Lock()
        self._handler: Any = None
        self._saved_threads: int | None = None
        self.timed = True  # False once entered on a torch without compile callbacks

    @property
    def seconds(self) -> float:
        """Wall seconds spent compiling since the session began (a compile in progress too)."""
        with self._lock:
            running = time.perf_counter() - self._started if self._started is not None else 0.0
            return self._seconds + running

    def compile(self, model: nn.Module) -> Callable[..., Any]:
        """``torch.compile(model)`` in a session that compiles, else ``model`` itself."""
        return torch.compile(model) if self.enabled else model

    def _start(self, *args: Any) -> None:  # torch >= 2.6 passes a CallbackArgs, 2.5 nothing
        with self._lock:
            self._started = time.perf_counter()

    def _end(self, *args: Any) -> None:
        with self._lock:
            if self._started is not None:
                self._seconds += time.perf_counter() - self._started
                self._started = None

    def __enter__(self) -> CompileSession:
        if not self.enabled:
            return self
        import torch._dynamo
        import torch._inductor.config as inductor_config  # late: ~1 s of imports

        torch.compiler.reset()  # the previous trial's graphs and its recompile counts go
        self._saved_threads = inductor_config.compile_threads
        inductor_config.compile_threads = self.threads
        # Registered after the reset, which clears every registered callback.
        self._handler = getattr(torch._dynamo, "callback_handler", None)
        if self._handler is None:
            self.timed = False
        else:
            self._handler.register_start_callback(self._start)
            self._handler.register_end_callback(self._end)
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.enabled:
            return
        import torch._inductor.config as inductor_config

        if self._handler is not None:
            for callbacks, fn in ((self._handler.start_callbacks, self._start),
                                  (self._handler.end_callbacks, self._end)):
                if fn in callbacks:
                    callbacks.remove(fn)
        self._end()  # a run stopped in the middle of a compilation: count it to here
        # The compiled graphs (and the guards that hold the model) go with the run, before
        # the trial's memory is released (trainables.device.TrialMemory).
        torch.compiler.reset()
        inductor_config.compile_threads = self._saved_threads
