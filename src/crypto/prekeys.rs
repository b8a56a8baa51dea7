//! prekeys
