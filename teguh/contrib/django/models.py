"""No models: teguh keeps its tables in its own ``teguh`` schema (installed by migrations)."""
