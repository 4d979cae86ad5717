//! The server's persistent state.

mod sqlite;

pub use sqlite::*;
