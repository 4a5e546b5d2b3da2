//! The kombu Redis transport against a real `redis-server`, and against real Python Celery
//! (clients and workers from `scripts/celery-venvs`).

mod support;

#[path = "broker/ack.rs"]
mod ack;
#[path = "broker/common.rs"]
mod common;
#[path = "broker/connect.rs"]
mod connect;
#[path = "broker/consume.rs"]
mod consume;
#[path = "broker/python.rs"]
mod python;
#[path = "broker/python_routing.rs"]
mod python_routing;
