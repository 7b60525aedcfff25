//! The embedded encrypted file store.
