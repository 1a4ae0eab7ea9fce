"""`tuned-proxy eval`: replay the held-out examples of a chat fine-tuning file through every
variant of a route and compare what each policy costs in tool-calling quality and saves in
tokens.

The stages, one module each: `cases` (turns of the file → eval cases), `runner` (each case sent
through the proxy's own request path, pinned to one variant), `compare` (one answer judged
against the example, pure), `stats` (confidence intervals, pure), `report` (per-variant
summary, table and JSON), `session` (cases → report, stoppable), `cli` (the command).
"""
