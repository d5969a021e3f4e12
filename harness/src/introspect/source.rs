//! Opening the physical memory `ps` reads: an image file, a live target over NetTLP, a capture.
//!
//! Invariant: each source kind is one function returning `Box<dyn PhysMem>`; the analysis never
//! knows which it got.

use std::path::Path;

use emulator::mem::PhysMem;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("opening image {path}: {reason}")]
    Image { path: String, reason: String },
    #[error("{0}")]
    NotAvailable(String),
}

/// A memory image file (ELF core, kdump, raw, LiME, AVML, live RAM file). `format` names the
/// format when it cannot be detected (see `emulator::image::Format::NAMES`).
pub fn open_image(path: &Path, format: Option<&str>) -> Result<Box<dyn PhysMem>, SourceError> {
    let err = |reason: String| SourceError::Image { path: path.display().to_string(), reason };
    let format = format.map(|f| f.parse::<emulator::image::Format>()).transpose().map_err(|e| err(e.to_string()))?;
    emulator::image::open(path, format, None).map_err(|e| err(e.to_string()))
}

/// A live machine over NetTLP (`nettlp://ADDR[:TAG][?options]`, see `dma::target`).
pub fn open_target(url: &str) -> Result<Box<dyn PhysMem>, SourceError> {
    let target: crate::dma::target::Target = url.parse().map_err(|e: crate::dma::target::TargetError| SourceError::NotAvailable(e.to_string()))?;
    let req = crate::dma::requester::Requester::connect(&target)
        .map_err(|e| SourceError::Image { path: url.to_string(), reason: e.to_string() })?;
    Ok(Box::new(req))
}

/// A recorded capture replayed as memory: the bytes the captured completions carried, at the
/// addresses they were read from (`emulator::capture::ReplayMem`).
pub fn open_pcap(path: &Path) -> Result<Box<dyn PhysMem>, SourceError> {
    let replay = emulator::capture::replay::ReplayMem::from_pcap(path)
        .map_err(|e| SourceError::Image { path: path.display().to_string(), reason: e.to_string() })?;
    tracing::info!(stats = ?replay.stats(), "capture replayed");
    Ok(Box::new(replay))
}
