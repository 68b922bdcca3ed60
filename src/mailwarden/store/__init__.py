"""Store: the SQLAlchemy Core schema (SQLite by default, PostgreSQL for fleets), ingestion of
correlated messages, queries for the reports, and retention."""
