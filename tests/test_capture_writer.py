"""The capture writer on real files: its bounded queue, rotation, a disk that refuses, and the
flush on close. The requests are records as the record stage hands them over."""

from __future__ import annotations

import asyncio
import json
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import structlog

from proxy.capture.pending import PendingCapture
from proxy.capture.writer import CaptureWriter
from proxy.config import Capture, ServerConfig
from proxy.outgoing import Outgoing
from proxy.record import RequestRecord
from tests.support.captures import capture_spec
from tests.support.waiting import eventually

USER = {"role": "user", "content": "hi"}
ANSWER = json.dumps(
    {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ]
    }
).encode()


def answered(
    capture: Capture, status: int = 200, text: str = "hi", answer: bytes = ANSWER
) -> RequestRecord:
    """A record whose answer the relay kept for the capture."""
    body = {"messages": [{"role": "user", "content": text}]}
    pending = PendingCapture(capture, body, "chat", 100)
    pending.outgoing = Outgoing(body, [], False, False)
    pending.keep(answer)
    record = RequestRecord(request_id="req", path="/v1/chat/completions", status=status)
    record.capture = pending
    return record


class Counts:
    def __init__(self) -> None:
        self.seen: Counter[tuple[str, str]] = Counter()

    def __call__(self, route: str, outcome: str) -> None:
        self.seen[(route, outcome)] += 1


def list_files(folder: Path) -> list[Path]:
    """The capture files in name order, which is the order they were opened in."""
    return sorted(folder.glob("*.jsonl"))


def lines_in(folder: Path) -> list[dict[str, Any]]:
    lines = []
    for path in list_files(folder):
        text = path.read_text()
        assert text.endswith("\n"), f"{path.name} ends inside a line"
        lines += [json.loads(line) for line in text.splitlines()]
    return lines


async def test_past_its_queue_a_capture_is_dropped_and_close_writes_the_rest(
    tmp_path: Path,
) -> None:
    counts = Counts()
    writer = CaptureWriter(counts, max_queued=2)
    writer.start()
    capture = capture_spec(tmp_path / "out")
    for index in range(5):  # all in one go: the writer task has not run yet
        writer.submit(answered(capture, text=f"q{index}"))
    await writer.close()
    assert counts.seen == Counter({("chat", "dropped"): 3, ("chat", "written"): 2})
    written = lines_in(tmp_path / "out")
    assert [example["messages"][0]["content"] for example in written] == ["q0", "q1"]
    assert writer.totals == Counter({"dropped": 3, "written": 2})


async def test_the_queue_is_bounded_in_bytes_too(tmp_path: Path) -> None:
    counts = Counts()
    writer = CaptureWriter(counts, max_queued=100, max_queued_bytes=600)
    first = answered(capture_spec(tmp_path))
    held = first.capture.held_bytes if first.capture else 0
    writer.submit(first)
    writer.submit(answered(capture_spec(tmp_path)))
    assert 2 * held > 600 >= held
    assert counts.seen == Counter({("chat", "dropped"): 1})
    await writer.close()
    assert counts.seen[("chat", "dropped")] == 2  # never started: close drops what waits


async def test_an_error_answer_a_gone_client_and_an_unanswered_request_are_skipped(
    tmp_path: Path,
) -> None:
    counts = Counts()
    writer = CaptureWriter(counts)
    writer.start()
    capture = capture_spec(tmp_path)
    writer.submit(answered(capture, status=500))
    gone = answered(capture)
    gone.client_disconnected = True
    writer.submit(gone)
    unanswered = answered(capture)
    assert unanswered.capture is not None
    unanswered.capture.outgoing = None
    writer.submit(unanswered)
    await writer.close()
    assert counts.seen == Counter({("chat", "skipped"): 3})
    assert not lines_in(tmp_path)


async def test_an_answer_no_line_can_hold_is_skipped_and_the_writer_goes_on(
    tmp_path: Path,
) -> None:
    # JSON nested deeper than the line writer writes (orjson reads 1024 levels, writes 254):
    # an upstream can answer it; the captures after it must still be written.
    nested: list[Any] = []
    for _ in range(300):
        nested = [nested]
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "tool_calls": [{**call, "x": nested}]}
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
    deep_answer = json.dumps({"choices": [choice]}).encode()
    counts = Counts()
    writer = CaptureWriter(counts)
    writer.start()
    capture = capture_spec(tmp_path)
    writer.submit(answered(capture, text="deep", answer=deep_answer))
    await eventually(lambda: counts.seen[("chat", "skipped")] == 1, "the deep answer skipped")
    writer.submit(answered(capture, text="after"))
    await writer.close()
    assert counts.seen == Counter({("chat", "skipped"): 1, ("chat", "written"): 1})
    assert [example["messages"][0]["content"] for example in lines_in(tmp_path)] == ["after"]


async def test_a_close_out_of_time_accounts_for_every_capture_and_leaves_whole_lines(
    tmp_path: Path,
) -> None:
    counts = Counts()
    writer = CaptureWriter(counts, max_queued=2000)
    writer.start()
    capture = capture_spec(tmp_path)
    for index in range(1500):
        writer.submit(answered(capture, text=f"q{index}"))
    await asyncio.sleep(0)  # the writer takes its first batch to its thread
    await writer.close(timeout_s=0)
    assert sum(counts.seen.values()) == 1500
    assert set(counts.seen) <= {("chat", "written"), ("chat", "dropped")}
    assert counts.seen[("chat", "dropped")] > 0
    assert len(lines_in(tmp_path)) == counts.seen[("chat", "written")]  # whole lines only
    assert writer.files == {}


async def test_files_rotate_by_size_hold_whole_lines_and_are_the_owners_alone(
    tmp_path: Path,
) -> None:
    counts = Counts()
    writer = CaptureWriter(counts)
    writer.start()
    capture = capture_spec(tmp_path / "out", max_file_bytes=300)  # about two lines a file
    for index in range(7):
        writer.submit(answered(capture, text=f"q{index}"))
    await writer.close()
    files = list_files(tmp_path / "out")
    assert len(files) >= 3
    for path in files:
        assert path.stat().st_size <= 300 or len(path.read_text().splitlines()) == 1
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert "-chat-" in path.name
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o700
    assert [line["messages"][0]["content"] for line in lines_in(tmp_path / "out")] == [
        f"q{index}" for index in range(7)
    ]


async def test_a_folder_that_cannot_be_made_fails_the_lines_and_says_so_once(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    counts = Counts()
    writer = CaptureWriter(counts)
    writer.start()
    capture = capture_spec(tmp_path / "a-file" / "captures")
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            writer.submit(answered(capture))
        await writer.close()
    assert counts.seen == Counter({("chat", "failed"): 3})
    failures = [line for line in logs if line["event"].startswith("capture could not write")]
    assert len(failures) == 1
    assert "NotADirectoryError" in failures[0]["error"] or "FileExistsError" in failures[0]["error"]


async def test_a_reload_closes_the_files_so_the_next_line_starts_a_new_one(tmp_path: Path) -> None:
    counts = Counts()
    writer = CaptureWriter(counts)
    writer.start()
    capture = capture_spec(tmp_path)
    writer.submit(answered(capture, text="before"))
    await _written(writer, counts, 1)
    writer.reconfigure(ServerConfig(capture_queue=7))
    assert writer.max_queued == 7
    writer.submit(answered(capture, text="after"))
    await writer.close()
    assert len(list_files(tmp_path)) == 2
    assert [line["messages"][0]["content"] for line in lines_in(tmp_path)] == ["before", "after"]


async def _written(writer: CaptureWriter, counts: Counts, expected: int) -> None:
    await eventually(lambda: counts.seen[("chat", "written")] >= expected, "the line is written")


def test_a_sampled_request_that_opts_out_is_skipped_and_an_unsampled_one_not_counted(
    tmp_path: Path,
) -> None:
    counts = Counts()
    writer = CaptureWriter(counts, rng=lambda: 0.5)
    body = {"messages": [USER]}
    off = {"x-tuned-proxy-capture": "OFF"}
    assert writer.begin(capture_spec(tmp_path, sample=0.4), {}, body, "chat", 10) is None
    assert counts.seen == Counter()
    assert writer.begin(capture_spec(tmp_path, sample=0.6), off, body, "chat", 10) is None
    assert counts.seen == Counter({("chat", "skipped"): 1})
    assert writer.begin(capture_spec(tmp_path, sample=0.6), {}, body, "chat", 10) is not None
