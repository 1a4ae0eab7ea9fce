"""Helpers the test files share (servers, configs, readings of the running proxy)."""
