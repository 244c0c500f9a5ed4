//! Log tailing, the loopback OTLP receiver, a durable disk queue and the
//! OTLP exporter. A library: no CLI, no globals; the agent drives it.
//! Its own crate because it carries the protobuf/gRPC stack the other
//! libraries do not need.

pub mod config;
