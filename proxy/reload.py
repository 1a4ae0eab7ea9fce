"""Config reload: load the files again and swap the runtime whole, or keep the old one.

A request reads `state.runtime` once when it starts, so in-flight requests finish on the
config they started with. A broken new config is refused, logged with every error line, and
counted; the old one keeps serving.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from proxy.auth import refuse_open_bind, unauthenticated_warning
from proxy.config import Runtime, load_config
from proxy.errors import ConfigError
from proxy.state import ProxyState

logger = structlog.get_logger("tuned_proxy.reload")
Fingerprint = tuple[tuple[str, int, int], ...]


# Settings a running process cannot change: its listeners are bound once, at start.
AT_START_ONLY = ("host", "port", "metrics_host", "metrics_port", "event_loop")


def reload_config(state: ProxyState, path: Path) -> bool:
    """Load `path` again; on success it serves every request that starts from now on.

    A reload is held to every rule start was: a config without client keys on an open
    address is refused as `serve` would have refused it.
    """
    try:
        runtime = load_config(path)
        refusal = refuse_open_bind(runtime, state.listener) if state.listener else None
        if refusal is not None:
            raise ConfigError([f"{path}: client_keys_env: {refusal}"])
    except ConfigError as exc:
        logger.error(
            "config reload refused; the previous config keeps serving",
            config=str(path),
            errors=exc.errors,
        )
        state.count_reload("error")
        return False
    previous = state.runtime
    state.serve(runtime)
    logger.info("config reloaded", config=str(path), routes=sorted(runtime.routes))
    state.count_reload("ok")
    warn_about(previous, runtime)
    return True


def warn_about(previous: Runtime, runtime: Runtime) -> None:
    """Say what a reloaded config changes that takes effect only at the next start, and when
    it serves without client auth."""
    before, after = previous.config.server, runtime.config.server
    for name in AT_START_ONLY:
        if getattr(before, name) != getattr(after, name):
            logger.warning(
                "server setting changed by the reload takes effect at the next start",
                setting=f"server.{name}",
            )
    warning = unauthenticated_warning(runtime)
    if warning is not None:
        logger.warning(warning)


def fingerprint(state: ProxyState, path: Path) -> Fingerprint:
    """Size and mtime of the config file and every file in its policies folder."""
    policies_dir = path.parent / state.runtime.config.policies_dir
    candidates = [path]
    if policies_dir.is_dir():
        candidates += sorted(p for p in policies_dir.iterdir() if p.is_file())
    marks = []
    for candidate in candidates:
        try:
            stat = candidate.stat()  # follows symlinks: a Kubernetes ConfigMap swap is seen
        except OSError:
            continue
        marks.append((str(candidate), stat.st_size, stat.st_mtime_ns))
    return tuple(marks)


async def watch_config(state: ProxyState, path: Path, interval_s: float = 1.0) -> None:
    """Reload whenever the config or a policy file changes (polling: works on any mount)."""
    seen = fingerprint(state, path)
    while True:
        await asyncio.sleep(interval_s)
        current = fingerprint(state, path)
        if current != seen:
            seen = current
            reload_config(state, path)
            seen = fingerprint(state, path)
