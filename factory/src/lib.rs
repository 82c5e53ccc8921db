//! The Image Factory (docs/formats/factory.md): an HTTP service that builds any asset of a schematic
//! and version on demand with the imager library, caches it in an OCI registry shared by
//! every instance, and serves PXE scripts.
//!
//! - [`config`]: the configuration file and `IF_` environment variables.
//! - [`path`]: the `/image/:schematic/:version/:path` grammar → an imager profile.
//! - [`enhance`]: schematic → the profile's customization, inputs pinned by digest, the
//!   cache key.
//! - [`artifacts`]: versions and the extension and overlay catalogs.
//! - [`store`]: the registry cache (signed entries) and schematic storage.
//! - [`service`]: the operations, build de-duplication and the concurrency bound.
//! - [`frontend`]: the installer registry (`/v2/`).
//! - [`http`]: the routes. [`wizard`]: the web wizard. [`log`]: structured logs.

pub mod artifacts;
pub mod config;
pub mod enhance;
pub mod frontend;
pub mod http;
pub mod log;
pub mod path;
pub mod service;
pub mod store;
pub mod wizard;
