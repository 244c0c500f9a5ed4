//! Log tailing, the loopback OTLP receiver, a durable disk queue and the
//! OTLP exporter. A library: no CLI, no globals; the agent drives it.
//! Its own crate because it carries the protobuf/gRPC stack the other
//! libraries do not need.

pub mod checkpoint;
pub mod config;
pub mod export;
pub mod parse;
pub mod pipeline;
pub mod queue;
pub mod receiver;
pub mod spans;
pub mod stats;
pub mod tail;
mod turn;
pub mod wire;
pub mod zone;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use pipeline::{start, Pipeline, StartError, StartOptions};
