//! ais-ingest
