"""Policy loading: YAML with line numbers, the schema, and the compiler."""

from authz.config.load import load_policy
from authz.identity.jwks import KeyRegistry

__all__ = ["KeyRegistry", "load_policy"]
