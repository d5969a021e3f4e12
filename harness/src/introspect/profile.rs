//! `profile`: everything learned about a kernel, as a Volatility 3 ISF or as JSON.
//!
//! Invariant: the profile is built by the same pipeline as `ps` (scan, symbols, layout with
//! the requested method, anchoring), so an ISF written here describes exactly the kernel `ps`
//! would walk; with the `btf` method (or `auto` picking it) every BTF type is included.

use emulator::mem::PhysMem;
use serde_json::{json, Value};

use super::anchor;
use super::kernel::Kernel;
use super::layout::{btf, learn, MethodKind};
use super::ps::{validate, PsError, PsOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileFormat {
    Isf,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Ps(#[from] PsError),
    #[error(transparent)]
    Isf(#[from] super::isf::IsfError),
}

pub fn profile(mem: &dyn PhysMem, opts: &PsOptions, format: ProfileFormat) -> Result<Value, ProfileError> {
    let found = Kernel::scan(mem, &opts.scan).map_err(PsError::from)?;
    let mut kernel = Kernel::open(mem, found).map_err(PsError::from)?;
    let (method, layout) =
        learn(opts.method.unwrap_or(MethodKind::Auto), &mut kernel, &opts.inputs, &validate).map_err(PsError::from)?;
    anchor::complete(&mut kernel, &layout).map_err(PsError::from)?;
    Ok(match format {
        ProfileFormat::Json => json!({"kernel": kernel.info, "method": method, "layout": layout}),
        ProfileFormat::Isf => {
            let parsed = if method == MethodKind::Btf { btf::load(&kernel).ok() } else { None };
            super::isf::document(&kernel, parsed.as_ref(), &layout, method.name())?
        }
    })
}
