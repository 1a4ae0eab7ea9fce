"""A route's capture, resolved, as the capture tests build it without a config file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.config import Capture


def capture_spec(folder: Path = Path("unused"), **changes: Any) -> Capture:
    """Route `chat`'s capture into `folder`: every exchange of variant `main`, no policy."""
    fields: dict[str, Any] = {
        "route": "chat",
        "dir": folder,
        "sample": 1.0,
        "policy": None,
        "redact": (),
        "max_file_bytes": 1 << 20,
        "variants": frozenset({"main"}),
        **changes,
    }
    return Capture(**fields)
