"""A request's capture while it is served: chosen when the route is known, fed the answer's
bytes by the relay, handed to the writer by the record stage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.config import Capture
from proxy.outgoing import Outgoing

OPT_OUT_HEADER = "x-tuned-proxy-capture"
# An answer larger than this is not kept: no training example is that long.
MAX_CAPTURED_ANSWER_BYTES = 8 * 1024 * 1024


@dataclass(slots=True)
class PendingCapture:
    """What the example is built from: the client's body, the request the model was sent,
    and the answer's bytes (a whole JSON body, or the stream events that carry content)."""

    spec: Capture
    client_body: dict[str, Any]
    client_api: str  # "chat" or "responses": the shape of `client_body`
    request_bytes: int
    outgoing: Outgoing | None = None  # the answering attempt's request, set by the relay
    streamed: bool = False
    answer: list[bytes] = field(default_factory=list)
    answer_bytes: int = 0
    too_large: bool = False

    def keep(self, data: bytes) -> None:
        """Keep one piece of the answer (a JSON body, or one stream event's data)."""
        if self.too_large:
            return
        self.answer_bytes += len(data)
        if self.answer_bytes > MAX_CAPTURED_ANSWER_BYTES:
            self.too_large = True
            self.answer.clear()
            return
        self.answer.append(data)

    @property
    def held_bytes(self) -> int:
        """About what it holds in memory: the parsed bodies (~3x their text) and the answer."""
        return 3 * self.request_bytes + self.answer_bytes


def opted_out(headers: Mapping[str, str]) -> bool:
    """The client asked that this request not be captured (`x-tuned-proxy-capture: off`)."""
    return headers.get(OPT_OUT_HEADER, "").strip().lower() == "off"
