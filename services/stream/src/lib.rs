//! faro-stream
