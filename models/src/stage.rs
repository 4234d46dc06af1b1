//! Engine adapters (filled in below).
