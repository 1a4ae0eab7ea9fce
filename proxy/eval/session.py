"""One eval from cases to report, stoppable at any moment with what was measured so far."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

from proxy.config import Runtime
from proxy.eval.cases import CaseSet
from proxy.eval.report import EvalReport, complete_outcomes, summarize
from proxy.eval.runner import EvalRun, EvalSettings, Outcome
from proxy.eval.text_bias import resolve_text_bias


async def evaluate(
    runtime: Runtime,
    case_set: CaseSet,
    settings: EvalSettings,
    *,
    examples_file: str = "",
    on_outcome: Callable[[Outcome], None] = lambda outcome: None,
    stop: asyncio.Event | None = None,
) -> EvalReport:
    """Run every case through every variant of `settings`; when `stop` is set first, cancel
    what is in flight and report the cases that every variant has answered so far.

    Raises `TextBiasUnresolved` before any case is sent when a variant's bias by text cannot
    be resolved (see `eval.text_bias`)."""
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    runtime, notes = await resolve_text_bias(runtime, settings.route, settings.variants)
    run = EvalRun(runtime, settings, on_outcome=on_outcome)
    interrupted = await _run_until_stopped(run, case_set, stop or asyncio.Event())
    counted = complete_outcomes(run.outcomes, settings.variants)
    return EvalReport(
        route=settings.route,
        examples_file=examples_file,
        config_file=runtime.path,
        cases=case_set,
        variants=summarize(counted, runtime.routes[settings.route], settings.variants),
        outcomes=counted,
        planned_cases=len(case_set.cases),
        counted_cases=len(counted) // max(1, len(settings.variants)),
        interrupted=interrupted,
        notes=tuple(notes),
        started_at=started_at,
        duration_s=time.perf_counter() - started,
    )


async def _run_until_stopped(run: EvalRun, case_set: CaseSet, stop: asyncio.Event) -> bool:
    """Whether the run was stopped before it finished; errors of the run itself propagate."""
    running = asyncio.create_task(run.run(case_set.cases))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (running, stopping):
            task.cancel()
        # Let the run close its client and its listening socket before reporting.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(running, stopping, return_exceptions=True)
    if running.cancelled():
        return True
    running.result()  # re-raises what made the run fail
    return False
