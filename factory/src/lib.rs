//! The Image Factory (docs/formats/factory.md): what its HTTP API names and builds.
//!
//! Implemented so far: [`path`], the `/image/:schematic/:version/:path` grammar turned into
//! an imager profile. The service itself (routes, builds, the registry cache, PXE, the
//! installer registry) is not written yet.

pub mod path;
