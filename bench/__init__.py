"""Isotope's benchmark harness: ``python -m bench [--quick] [--database-url URL] [--out DIR]``.

It puts Isotope beside LangGraph's PostgresSaver, langchain-postgres, the OpenAI Agents SDK and
the physical floor (one multi-row INSERT into an append-only table), all on one PostgreSQL in one
run, and reports every figure also as a ratio to the floor measured in that same run. It never
gates anything on an absolute time. See ``bench/cli.py`` for the options and ``bench/README.md``
for the method.
"""
