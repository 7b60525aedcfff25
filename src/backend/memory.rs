//! An in-process backend: the reference implementation of the contract, used by unit tests
//! of the rotation engine and by `rotate --dry-run`'s planning.
