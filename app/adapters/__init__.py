"""Isotope as the persistence of other agent frameworks, each behind its own extra.

* :mod:`app.adapters.langgraph`: ``IsotopeSaver`` / ``AsyncIsotopeSaver`` (``isotope[langgraph]``)
* :mod:`app.adapters.openai_agents`: ``IsotopeSession`` (``isotope[agents]``)
* :mod:`app.adapters.adk`: ``IsotopeSessionService`` (``isotope[adk]``)

Nothing here is imported by the rest of Isotope, so a missing framework costs only its adapter.
"""
