//! faro-edge
