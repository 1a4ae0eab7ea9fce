"""Capture: sampled live exchanges written as chat fine-tuning examples (distillation).

Three parts, in the order a captured request meets them:

- `pending`: the request's capture, decided when the route is known (sampled, not opted
  out), which keeps the answer's bytes as the relay passes them on;
- `example`: the exchange as one training example — the messages the model saw, its answer
  as the last assistant message, the tools as the capture's policy serves them — redacted
  and held to `training check`'s rules (pure: no I/O);
- `writer`: a bounded queue and one task that builds the examples and appends them to
  size-rotated files, off the request path; a full queue or a failing disk drops, counted.
"""
