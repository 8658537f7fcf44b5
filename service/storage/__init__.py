"""The SQL foundation: engine set-up, the ORM schema, migrations and one transaction helper.

The gallery store, its change log, its jobs and the API-key store all keep their rows in
this one database, created and evolved only by the alembic migrations in ``migrations/``.
"""

from service.storage.database import Database

__all__ = ["Database"]
