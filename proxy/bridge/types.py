"""What the bridge's translations pass around."""

from __future__ import annotations

from typing import Any

Body = dict[str, Any]
