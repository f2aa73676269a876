"""The SQLite edit store (SQLAlchemy). Never imports Qt."""
