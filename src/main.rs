//! The `rekeyd` binary.

fn main() {}
