"""Micro-benchmark of reading an answer: µs per answer, relay and record stage, no network.

What tuned-proxy does with the bench's answers (`fixtures/stream.sse`, a 14-event tool-call
stream as OpenAI sends it, and `fixtures/answer.json`) besides passing them on:
- relay a stream: split it into events, test each one bytewise, note the chunks to read
  later, drop the usage chunk the client did not ask for (with and without that last step);
- the record stage of a stream: read the noted chunks (finish reason, usage, the tool call
  and its argument fragments);
- a JSON answer: read what it reports.
The policy checks arguments, as the bench's policies do, so every tool-call chunk is read.

Runs against the `proxy` package on the path, so it also measures another revision:
`PYTHONPATH=DIR python tests/bench/bench_answer.py` with DIR holding that revision's `proxy`
(`git archive REV proxy | tar -x -C DIR`).

Usage: python tests/bench/bench_answer.py [--quick]   (taskset -c 0 … to pin it)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from bench_rewrite import us_per_call
from harness import FIXTURES

from proxy import jsonutil, observe
from proxy.record import RequestRecord
from proxy.relay import StreamRelay
from proxy.rewrite.policy import PASSTHROUGH

STREAM = (FIXTURES / "stream.sse").read_bytes()
ANSWER = (FIXTURES / "answer.json").read_bytes()


def checked_record() -> RequestRecord:
    record = RequestRecord(request_id="req_bench", path="/v1/chat/completions")
    record.argument_check = (PASSTHROUGH, None)  # arguments are read, as the policies ask
    record.keeps_arguments = True
    return record


def relay_stream(strip_usage: bool) -> Callable[[], object]:
    """The relay's work on the stream, arriving in one read (as nginx sends it)."""

    def once() -> object:
        relay = StreamRelay(checked_record(), legacy=False, strip_usage=strip_usage)
        return relay._forward(relay.splitter.feed(STREAM))

    return once


def read_noted_chunks() -> Callable[[], object]:
    """The record stage's read of the chunks the relay noted."""
    noted = relay_noted()

    def once() -> object:
        record = checked_record()
        record.noted_chunks = list(noted)
        observe.observe_noted_chunks(record)
        return record

    return once


def relay_noted() -> list[bytes]:
    relay = StreamRelay(checked_record(), legacy=False, strip_usage=False)
    relay._forward(relay.splitter.feed(STREAM))
    return list(relay.record.noted_chunks)


def read_json_answer() -> Callable[[], object]:
    """What the relay reads of a JSON answer (the typed read where the revision has one)."""
    typed = getattr(observe, "observe_completion_json", None)

    def once() -> object:
        record = checked_record()
        if typed is not None:
            typed(record, ANSWER)
        else:
            observe.observe_completion(record, jsonutil.loads(ANSWER))
        return record

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timed batches")
    args = parser.parse_args()
    batches = 3 if args.quick else 9
    rows = [
        ("relay the stream (14 events)", relay_stream(strip_usage=False)),
        ("relay the stream, dropping the usage chunk", relay_stream(strip_usage=True)),
        (f"read the {len(relay_noted())} noted chunks (record stage)", read_noted_chunks()),
        ("read a JSON answer", read_json_answer()),
    ]
    print("| answer work | µs (fastest batch) |")
    print("| --- | ---: |")
    for label, work in rows:
        print(f"| {label} | {us_per_call(work, batches):.1f} |")


if __name__ == "__main__":
    main()
