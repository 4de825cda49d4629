"""Reliability tests: crashes, I/O faults, concurrency, hostile input and resource hygiene.

Each test records its figures (runs, kills, faults injected, writes acknowledged and lost)
through the ``figures`` fixture; ``--reliability-report=RELIABILITY.md`` writes them as a table.
"""
