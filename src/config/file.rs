//! The configuration file's layer, between the defaults and the environment.
//!
//! Reserved: the TOML file (docs/architecture.md, "What comes next") is read here by a
//! later change, which will also give `gather` its path and report errors with the file
//! and line. Until then there is no file and this layer sets nothing.

use super::Layer;

/// The settings the configuration file gives. Empty for now.
pub struct FileLayer;

impl FileLayer {
    /// No file is read yet: an empty layer, so every option falls through to the defaults.
    pub fn read() -> Layer {
        Layer::default()
    }
}
