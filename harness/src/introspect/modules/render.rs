//! Rendering modules: a table with `/proc/modules`' columns, JSON Lines, CSV. Pure functions
//! from modules to text.
//!
//! Invariant: one record per module in the given order (the list's, as `/proc/modules`); a value
//! the layout could not give (`refcnt` without `CONFIG_MODULE_UNLOAD`, or not inferred) is `-`
//! in the table and CSV and `null` in JSON, never a guess.

use std::fmt::Write;

use super::list::Module;
use crate::introspect::output::{csv_field, Format};

pub fn render(modules: &[Module], format: Format) -> String {
    match format {
        Format::Table => table(modules),
        Format::Json => json_lines(modules),
        Format::Csv => csv(modules),
    }
}

fn refcount(m: &Module) -> String {
    m.refcount.map(|r| r.to_string()).unwrap_or_else(|| "-".into())
}

/// The "used by" column as `/proc/modules` prints it: `a,b,` or `-`; `?` when unknown.
pub fn used_by(m: &Module) -> String {
    match &m.used_by {
        None => "?".into(),
        Some(u) if u.is_empty() => "-".into(),
        Some(u) => u.iter().map(|x| format!("{x},")).collect(),
    }
}

fn taints(m: &Module) -> String {
    match &m.taints {
        None => "-".into(),
        Some(t) if t.is_empty() => String::new(),
        Some(t) => format!("({t})"),
    }
}

/// `NAME SIZE REFCOUNT STATE ADDRESS TAINTS`, aligned, with a header.
pub fn table(modules: &[Module]) -> String {
    let w = modules.iter().map(|m| m.name.len()).max().unwrap_or(0).max(6);
    let u = modules.iter().map(|m| used_by(m).len()).max().unwrap_or(0).max(7);
    let mut out = format!("{:<w$} {:>8} {:>4} {:<u$} {:<9} {:<18} TAINTS\n", "MODULE", "SIZE", "REFS", "USED_BY", "STATE", "ADDRESS");
    for m in modules {
        let line = format!("{:<w$} {:>8} {:>4} {:<u$} {:<9} {:#018x} {}", m.name, m.size, refcount(m), used_by(m), m.state, m.address, taints(m));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One JSON object per module.
pub fn json_lines(modules: &[Module]) -> String {
    let mut out = String::new();
    for m in modules {
        out.push_str(&serde_json::to_string(m).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// CSV with a header row.
pub fn csv(modules: &[Module]) -> String {
    let mut out = String::from("name,size,refcount,used_by,state,address,taints,module\n");
    for m in modules {
        let t = m.taints.clone().unwrap_or_else(|| "-".into());
        let _ = writeln!(out, "{},{},{},{},{},{:#x},{},{:#x}", csv_field(&m.name), m.size, refcount(m), csv_field(&used_by(m)), m.state, m.address, csv_field(&t), m.module);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules() -> Vec<Module> {
        let m = |name: &str, refcount, used_by: Option<&[&str]>, taints: Option<&str>| Module {
            name: name.into(),
            size: 16384,
            refcount,
            state: "Live",
            address: 0xffff_ffff_c03f_5000,
            taints: taints.map(str::to_string),
            used_by: used_by.map(|u| u.iter().map(|s| s.to_string()).collect()),
            module: 0xffff_ffff_c03f_9040,
        };
        vec![
            m("ts_kmp", Some(0), Some(&[]), Some("")),
            m("fat", Some(2), Some(&["msdos", "vfat"]), Some("")),
            m("nvidia", Some(2), Some(&["[permanent]"]), Some("POE")),
            m("inferred_only", None, None, None),
        ]
    }

    #[test]
    fn renderings() {
        insta::assert_snapshot!("table", table(&modules()));
        insta::assert_snapshot!("json", json_lines(&modules()));
        insta::assert_snapshot!("csv", csv(&modules()));
    }
}
