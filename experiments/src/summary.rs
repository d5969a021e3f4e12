//! The summary printed on stdout after `experiments run`: one line per experiment, then its
//! headline numbers and failures (in the manner of hyperfine's report).
//!
//! Invariant: [`table`] is a pure function of the outcomes; paths are shown relative to `base`
//! when they are under it.

use std::fmt::Write;
use std::path::Path;

use crate::driver::Outcome;

/// Renders the summary.
pub fn table(outcomes: &[Outcome], base: &Path) -> String {
    let mut out = String::new();
    let header = ["experiment", "runs ok", "failed", "rows", "wall_s", "output"];
    let lines: Vec<[String; 6]> = outcomes
        .iter()
        .map(|o| {
            let path = o.output.strip_prefix(base).unwrap_or(&o.output);
            [
                o.name.to_string(),
                format!("{}/{}", o.runs_ok, o.runs_planned),
                o.failures.len().to_string(),
                o.rows.to_string(),
                format!("{:.2}", o.wall.as_secs_f64()),
                path.display().to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for l in &lines {
        for (w, cell) in widths.iter_mut().zip(l) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt_line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Text left-aligned, numbers right-aligned.
            if (1..=4).contains(&i) {
                let _ = write!(s, "{cell:>w$}  ");
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", fmt_line(&header));
    for l in &lines {
        let cells: Vec<&str> = l.iter().map(String::as_str).collect();
        let _ = writeln!(out, "{}", fmt_line(&cells));
    }
    for o in outcomes {
        if o.headline.is_empty() && o.failures.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{}:", o.name);
        for h in &o.headline {
            let _ = writeln!(out, "  {h}");
        }
        for f in &o.failures {
            let _ = writeln!(out, "  FAILED {}: {}", f.run, f.error);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::Failure;
    use std::time::Duration;

    #[test]
    fn summary_table() {
        let outcomes = vec![
            Outcome {
                name: "wire-latency",
                output: "/repo/results/wire-latency.csv".into(),
                runs_planned: 10,
                runs_ok: 10,
                rows: 291,
                wall: Duration::from_millis(412),
                failures: vec![],
                headline: vec!["nettlp-hw fix: median 12-14 us".into()],
            },
            Outcome {
                name: "wire-throughput",
                output: "/repo/results/wire-throughput.csv".into(),
                runs_planned: 40,
                runs_ok: 39,
                rows: 390,
                wall: Duration::from_millis(1500),
                failures: vec![Failure {
                    run: "nettlp-hw seq 1024 B x16".into(),
                    error: "line 3: unknown line".into(),
                }],
                headline: vec![],
            },
        ];
        insta::assert_snapshot!(table(&outcomes, Path::new("/repo")));
    }
}
