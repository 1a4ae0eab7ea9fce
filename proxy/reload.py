"""Config reload: load the files again and swap the runtime whole, or keep the old one.

A request reads `state.runtime` once when it starts, so in-flight requests finish on the
config they started with. A broken new config is refused, logged with every error line, and
counted; the old one keeps serving.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from proxy.config import load_config
from proxy.errors import ConfigError
from proxy.state import ProxyState

logger = structlog.get_logger("tuned_proxy.reload")
Fingerprint = tuple[tuple[str, int, int], ...]


def reload_config(state: ProxyState, path: Path) -> bool:
    """Load `path` again; on success it serves every request that starts from now on."""
    try:
        runtime = load_config(path)
    except ConfigError as exc:
        logger.error(
            "config reload refused; the previous config keeps serving",
            config=str(path),
            errors=exc.errors,
        )
        state.count_reload("error")
        return False
    state.runtime = runtime
    logger.info("config reloaded", config=str(path), routes=sorted(runtime.routes))
    state.count_reload("ok")
    return True


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
