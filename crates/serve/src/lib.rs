//! ais-serve
