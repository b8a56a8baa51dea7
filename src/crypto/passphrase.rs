//! passphrase
