//! faro-conversations
