//! Causal Q-Former.
