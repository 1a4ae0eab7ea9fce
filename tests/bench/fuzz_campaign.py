"""The long fuzz campaign: `tests/test_fuzz.py` with its example counts multiplied.

    .venv/bin/python tests/bench/fuzz_campaign.py              # scale 100
    .venv/bin/python tests/bench/fuzz_campaign.py --scale 20 --seed 1234

The suite runs the same properties with small counts on every test run; this runs them once
at length: generated policies and requests against the rewrite engine, and against the
running proxy in front of the fake upstream. It prints, per property, how many examples ran
and what became of them (hypothesis's statistics), the seed that reproduces the campaign,
and exits with pytest's status.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# "- Stopped because settings.max_examples=30000", "* 67.55%, rewritten"
SUMMARY = re.compile(r"^(tests/test_fuzz\.py::\S+:|\s+- Stopped because .*|\s+\* [\d.]+%, .*)$")
NOISE = re.compile(r"Retried draw|exceeded max_leaves")  # how hypothesis drew, not what it found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=100, help="multiplies the example counts")
    parser.add_argument("--seed", type=int, default=random.randrange(2**32))
    args = parser.parse_args(argv)
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "tests/test_fuzz.py", "--hypothesis-show-statistics", f"--hypothesis-seed={args.seed}",
    ]  # fmt: skip
    env = {**os.environ, "TUNED_PROXY_FUZZ_SCALE": str(args.scale)}
    started = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    print(f"## Fuzz campaign (scale {args.scale}, seed {args.seed}, {seconds:.0f} s)\n")
    for line in result.stdout.splitlines():
        if SUMMARY.match(line) and not NOISE.search(line):
            print(line)
    print("\n" + (result.stdout.strip().splitlines() or ["(no output)"])[-1])
    if result.returncode != 0:
        print(result.stdout[-5000:], result.stderr[-2000:], sep="\n", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
