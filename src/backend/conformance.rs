//! The backend contract as executable checks.
