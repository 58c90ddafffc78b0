"""The benchmark's scenarios, one module per family.

- ``measure``: how an HTTP scenario is measured (wrk at each concurrency, each point paired with
  the bare route) and the sandbox-counter checks;
- ``reads``: the bare route, ``/health``, the cached hot path, the customer lookups, and the
  informative row with two Granian workers;
- ``pipeline``: ``/leads/process`` at zero upstream latency and the 64-lead batch at 400 ms;
- ``webhooks``: webhook acceptance and the worker's drain rate.

Each scenario takes the :class:`bench.load.session.Run` and writes its block of the result.
"""
