//! The command-line subcommands other than `serve`: `generate`, `index`/`search` and `voice`.

pub mod caption;
pub mod eval;
pub mod generate;
pub mod index;
pub mod pull;
pub mod task;
pub mod voice;
