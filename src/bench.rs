//! `cinder bench` scenarios.
