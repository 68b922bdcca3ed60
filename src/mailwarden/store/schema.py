"""The store's SQLAlchemy Core schema: one :data:`metadata` for every table.

Tables of other concerns (egress, breaker, alerts) are declared in their own modules inside this
package (``store/egress.py``, ``store/breaker.py`` ...) on this same ``metadata``, so that one
``metadata.create_all`` creates everything.
"""

from __future__ import annotations

from sqlalchemy import MetaData

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
