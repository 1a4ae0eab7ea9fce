"""Helpers the test files share; `tests/conftest.py` keeps only the fixtures made of them.

- `keys`: the client and upstream keys, and the environment variables that carry them;
- `configs`: config dicts (`basic_config`, `fault_config`, the fault matrix) and repo paths;
- `servers`: the fake upstream, the running proxy, refused and blackholed ports;
- `processes`: the proxy as a real process, its log lines and descriptors;
- `http`: requests as a client sends them (`exchange`, raw bytes), stream `data:` events;
- `metrics`: samples parsed from `/metrics` or the registry, summed by label;
- `records`: request records to feed the metrics without a server;
- `strategies`: hypothesis strategies for JSON-shaped chat requests;
- `pool`: the upstream pool's connection counts, for leak checks;
- `waiting`: `eventually`, for state that settles after the fact.
"""
