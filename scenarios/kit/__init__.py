"""The scenario runner's machinery: the pytest plugin (registered by scenarios/conftest.py),
the targets and their real servers, the client, capture, grammar, differential and
external-target support. Scenarios (scenarios/test_*.py) use it; it imports no scenario."""
