"""Training files: checking a chat or preference (DPO) fine-tuning file, rewriting its tools,
and merging chat files.

`run_check` is `tuned-proxy training check`, `run_rewrite` is `tuned-proxy training rewrite`,
`run_merge` is `tuned-proxy training merge`.
"""

from proxy.training.check import Summary, TrainingFileCheck, run_check
from proxy.training.findings import Finding
from proxy.training.merge import run_merge
from proxy.training.rewrite import rewrite_example, run_rewrite

__all__ = [
    "Finding",
    "Summary",
    "TrainingFileCheck",
    "rewrite_example",
    "run_check",
    "run_merge",
    "run_rewrite",
]
