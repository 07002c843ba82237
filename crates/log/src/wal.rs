//! filled in by the WAL implementation
