"""Reference recipes (oracles for tests and benchmarks), outside the package."""
