//! Loom models of the session table (filled in below).
