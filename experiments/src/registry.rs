//! The experiments this build can run, and the ones the evaluation plans that still wait for
//! other parts of the workbench.
//!
//! Invariant: a name on the command line selects exactly the experiments whose name or module
//! it equals (`all` selects every available one); a name of a planned but unavailable
//! experiment is an error that says what it waits for, never an empty success.

use crate::baseline::Baseline;
use crate::config_matrix::ConfigMatrix;
use crate::driver::Runnable;
use crate::faults::Faults;
use crate::fleet::Fleet;
use crate::forensics::Forensics;
use crate::live::Live;
use crate::panic::Panic;
use crate::plugins::BaselinePlugins;
use crate::scaling::Scaling;
use crate::timing::Timing;
use crate::wire::{WireLatency, WireThroughput};

/// Every experiment available in this build, in the order `all` runs them.
pub fn available() -> Vec<Box<dyn Runnable>> {
    vec![
        Box::new(ConfigMatrix),
        Box::new(Timing),
        Box::new(Panic),
        Box::new(WireLatency),
        Box::new(WireThroughput),
        Box::new(Scaling),
        Box::new(Faults),
        Box::new(Forensics),
        Box::new(Fleet),
        Box::new(Live),
        Box::new(Baseline),
        Box::new(BaselinePlugins),
    ]
}

/// Experiments of the evaluation (issue 5) not in this build yet, with what they wait for.
pub const PENDING: &[(&str, &str)] = &[];

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("experiment `{name}` is not in this build yet: it needs {needs}")]
    Pending { name: String, needs: &'static str },
    #[error("unknown experiment `{name}`; known: all, {known}")]
    Unknown { name: String, known: String },
}

/// The experiments selected by `names` (names or module names, or `all`), without repeats,
/// in registry order.
pub fn select(names: &[String]) -> Result<Vec<Box<dyn Runnable>>, SelectError> {
    let all = available();
    let mut chosen = vec![false; all.len()];
    for name in names {
        if name == "all" {
            chosen.iter_mut().for_each(|c| *c = true);
            continue;
        }
        let mut hit = false;
        for (c, e) in chosen.iter_mut().zip(&all) {
            if e.name() == name || e.module() == name {
                *c = true;
                hit = true;
            }
        }
        if hit {
            continue;
        }
        if let Some((_, needs)) = PENDING.iter().find(|(n, _)| n == name) {
            return Err(SelectError::Pending {
                name: name.clone(),
                needs,
            });
        }
        let known = all.iter().map(|e| e.name()).collect::<Vec<_>>().join(", ");
        return Err(SelectError::Unknown {
            name: name.clone(),
            known,
        });
    }
    Ok(all
        .into_iter()
        .zip(chosen)
        .filter_map(|(e, c)| c.then_some(e))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sel: &[&str]) -> Vec<&'static str> {
        let sel: Vec<String> = sel.iter().map(|s| s.to_string()).collect();
        select(&sel).unwrap().iter().map(|e| e.name()).collect()
    }

    #[test]
    fn selection() {
        assert_eq!(names(&["wire"]), ["wire-latency", "wire-throughput"]);
        assert_eq!(
            names(&["wire-throughput", "wire-latency"]),
            ["wire-latency", "wire-throughput"]
        );
        assert_eq!(names(&["all", "wire"]).len(), available().len());
        assert_eq!(names(&["config-matrix"]), ["config-matrix"]);
        assert!(matches!(select(&["nope".into()]), Err(SelectError::Unknown { .. })));
    }
}
