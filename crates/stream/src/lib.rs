//! ais-stream
