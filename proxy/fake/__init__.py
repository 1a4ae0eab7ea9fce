"""The built-in fake model (`model`), its OpenAI-compatible server (`server`: `kind: mock` and
`tuned-proxy mock-upstream`), and the demo that drives the proxy in front of it (`demo`)."""
