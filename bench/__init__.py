"""Benchmark harness: Querator against redis-server on the same machine, in the same run.

`python -m bench.run` runs the workloads (see bench/README.md); `bench.servers` starts and stops the
servers, `bench.redis_benchmark` drives `redis-benchmark`, `bench.loadgen` is the asyncio load generator.
"""
