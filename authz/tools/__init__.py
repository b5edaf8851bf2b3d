"""Tools beside the decision core: development tokens and Envoy configuration."""
