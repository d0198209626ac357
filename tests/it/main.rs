//! FARO's integration tests: real Postgres (a database per test), real Redis
//! (a key prefix per test), the services in-process on port 0, and real HTTP,
//! gRPC and WebSocket clients. Tests run in parallel.

mod abuse;
mod account_events;
mod cli;
mod client_limits;
mod clients;
mod cluster;
mod configs;
mod conversation_events;
mod crash;
mod customers;
mod dead_letter;
mod dlq;
mod dlq_admin;
mod event_rules;
mod events;
mod fuzz_found;
mod grpcurl;
mod isolation;
mod late_commit;
mod listing;
mod live;
mod log_hygiene;
mod messaging;
mod metrics;
mod monitoring;
mod openapi;
mod positions;
mod postgres_restart;
mod process;
mod ratelimit;
mod ratelimit_flood;
mod reclaim;
mod redis_dies;
mod redis_restart;
mod retry;
mod security;
mod shutdown;
mod slow_clients;
mod stream_reconnect;
mod test_db;
mod typing;
mod webhook;
mod websocket;
mod whatsapp;
