"""The concurrency scenario: many conversations at once against a model with a real latency.

One server process (``isotope serve``, or LangGraph's ``AsyncPostgresSaver`` behind a minimal
FastAPI app), a fake OpenAI-compatible model with a fixed latency per reply (its own process,
asyncio), and N clients each on a session of its own sending turns over HTTP. See
``bench/README.md`` ("Concurrency at model latency") for the method and ``scenario.py`` for the
driver.
"""
