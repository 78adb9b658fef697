"""What a flow author writes: flows, tasks, graph checks, trigger specs, the run context,
results, retry policies, and the loader that imports flow files."""
