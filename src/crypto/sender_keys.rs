//! sender_keys
