//! The arbiter's configuration: the TOML file users edit, read into a validated, typed [`Config`].
//!
//! Reading happens in two stages. TOML is parsed into its spanned tree, then a reader walks it
//! key by key ([`reader`]), converting and checking each value into the validated types
//! ([`types`]), starting from the built-in defaults ([`defaults`], the only place they are
//! written). Every problem is collected, never just the first: an unknown key (with a
//! suggestion), a wrong type, a bad duration, an impossible value. Each error names its key path
//! and line, so `arbiter check` shows a user everything at once.
//!
//! Relative paths in the file are resolved against the directory of the file itself, so a
//! config works the same whatever directory the arbiter is started from.
//!
//! The modules: [`error`] (what can be wrong), [`read`], [`recipe`] (the model's pre- and
//! postprocessing) and [`programs`] (validation),
//! [`emit`] (the effective config written back as TOML), [`rules`] (values derived from the
//! config and the machine, like threads per worker), [`net`] (IP networks) and [`units`]
//! (durations and sizes).

pub mod defaults;
mod emit;
mod error;
mod net;
mod programs;
mod read;
mod reader;
mod recipe;
mod rules;
mod types;
pub mod units;

pub use error::{ConfigError, LoadError};
pub use net::{CidrError, IpCidr};
pub use programs::STOP_SIGNALS;
pub use read::locate;
pub use rules::{find_model, runs_lanes};
pub use types::{
    Amount, Autorestart, Batching, Bind, ChannelOrder, Config, Device, ElementType, Filter,
    Geometry, InputSize, Limits, Log, Memory, Model, Output, Postprocess, Precision, Preprocess,
    Program, Server, TensorLayout, TrustedProxy,
};

#[cfg(test)]
mod recipe_tests;
#[cfg(test)]
mod tests;
