//! faro-ingest
