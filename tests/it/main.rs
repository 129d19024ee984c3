//! End-to-end tests: the service runs in-process on port 0 against the real PostgreSQL and
//! RabbitMQ, each test with a database and namespace of its own.

// A test that cannot set up its world should stop there, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod breaker;
mod console;
mod docs;
mod event_types;
mod filters;
mod hardening;
mod health;
mod helpers;
mod limits;
mod logs;
mod migrations;
mod pipeline;
mod portal;
mod recovery;
mod resilience;
mod retries;
mod scale;
mod secrets;
mod storage;
mod store;
mod tracing;
mod webhooks;
