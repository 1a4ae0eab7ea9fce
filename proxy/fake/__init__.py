"""The built-in fake model (`model`, and `responses` for the Responses API), its
OpenAI-compatible server (`server`: `kind: mock` and `tuned-proxy mock-upstream`), and the
demo that drives the proxy in front of it (`demo`)."""
