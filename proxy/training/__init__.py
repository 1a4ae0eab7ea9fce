"""Training files: checking a chat or preference (DPO) fine-tuning file, and rewriting its tools.

`run_check` is `tuned-proxy training check`, `run_rewrite` is `tuned-proxy training rewrite`.
"""

from proxy.training.check import Summary, TrainingFileCheck, run_check
from proxy.training.findings import Finding
from proxy.training.rewrite import rewrite_example, run_rewrite

__all__ = [
    "Finding",
    "Summary",
    "TrainingFileCheck",
    "rewrite_example",
    "run_check",
    "run_rewrite",
]
