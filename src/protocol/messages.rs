//! The typed messages inside a [`Frame`], generated at build time from `docs/cinder.proto` (see
//! `build.rs`): the `.proto` file is the only definition of the schema, so the Rust types and
//! the file other implementations read cannot drift apart. Field numbers never change meaning.
//!
//! Every request carries the client's `Frame.id`; the relay answers with the same id. Pushes
//! (`Delivery`, `Policy`, `Bye`) use id 0.

include!(concat!(env!("OUT_DIR"), "/cinder.v1.rs"));
