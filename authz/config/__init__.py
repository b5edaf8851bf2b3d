"""Policy loading: YAML with line numbers, the schema, and the compiler."""

from authz.config.compile import KeyRegistry, load_policy

__all__ = ["KeyRegistry", "load_policy"]
