"""What the tests and the benchmarks share: fixture paths, real processes
(authz, Envoy, HTTP servers), requests, tokens and keys, a fake identity
provider, a mesh CA, and the benchmark's native-Envoy baseline configs.

Not shipped (pyproject.toml packages only ``authz*``); tests and benchmarks
import it from the repository root.
"""
