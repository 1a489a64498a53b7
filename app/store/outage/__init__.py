"""The outage store: PostgreSQL first, a file copy and a durable spool while it is unreachable.

``store``   :class:`OutageStore`, the routing between PostgreSQL and the files
``health``  tripping into fallback and recovering
``writer``  spooled saves and deletes (with the file-store copy)
``record``  the spool record: typed, versioned
``spool``   the spool directory on local disk
``replay``  draining the spool into PostgreSQL (:class:`Replayer`, whose ``step`` is one pass)

Import :class:`OutageStore` from :mod:`app.store.outage.store` (this package's ``__init__`` stays
empty so that the PostgreSQL store can import :mod:`.record` without importing the rest).
"""
