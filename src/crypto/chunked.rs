//! chunked
