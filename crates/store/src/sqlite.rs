//! filled in by the SQLite implementation
