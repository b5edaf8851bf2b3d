"""``authz test``: policy tests in CI (case files, stand-in credentials, coverage)."""
