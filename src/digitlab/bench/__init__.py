"""Benchmarks (`digitlab bench NAME`), each side in its own process; see `harness`."""

from digitlab.bench import mlp_train

BENCHMARKS = {"mlp-train": mlp_train}
