//! Rendering `hidden`'s findings and views: a table, JSON Lines, CSV. Pure functions.
//!
//! Invariant: every finding is one record, then every view is one record (`kind` `view`: its
//! name, status, what it saw and how, or why it did not run), so that the output alone says
//! which views the comparison rests on. No findings and every view `ran` means nothing hidden
//! was seen.

use std::fmt::Write;

use super::{Finding, Kind, Status, ViewReport};
use crate::introspect::output::{csv_field, Format};

pub fn render(findings: &[Finding], views: &[ViewReport], format: Format) -> String {
    match format {
        Format::Table => table(findings, views),
        Format::Json => json_lines(findings, views),
        Format::Csv => csv(findings, views),
    }
}

fn kind(k: Kind) -> &'static str {
    match k {
        Kind::Task => "task",
        Kind::Module => "module",
    }
}

pub fn status(s: Status) -> &'static str {
    match s {
        Status::Ran => "ran",
        Status::Partial => "partial",
        Status::Unavailable => "unavailable",
        Status::Failed => "failed",
        Status::Skipped => "skipped",
    }
}

fn opt(v: Option<i32>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn seen_by(f: &Finding) -> String {
    f.seen_by.iter().map(|v| v.name()).collect::<Vec<_>>().join(",")
}

fn view_text(v: &ViewReport) -> String {
    let mut s = format!("{} {}: {} seen, {} off the list; {}", v.view.name(), status(v.status), v.seen, v.off_list, v.how);
    if let Some(e) = &v.error {
        let _ = write!(s, "; error: {e}");
    }
    s
}

/// Findings as aligned columns with a header, then one `# view ...` line per view.
pub fn table(findings: &[Finding], views: &[ViewReport]) -> String {
    let w = findings.iter().map(|f| f.name.len()).max().unwrap_or(0).max(4);
    let mut out = format!("{:<6} {:>7} {:>7} {:<w$} {:<9} {:<18} {:<20} NOTE\n", "KIND", "PID", "TGID", "NAME", "STATE", "ADDRESS", "SEEN_BY");
    for f in findings {
        let line = format!(
            "{:<6} {:>7} {:>7} {:<w$} {:<9} {:#018x} {:<20} {}",
            kind(f.kind),
            opt(f.pid),
            opt(f.tgid),
            f.name,
            f.state,
            f.address,
            seen_by(f),
            f.note.as_deref().unwrap_or("")
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for v in views {
        let _ = writeln!(out, "# view {}", view_text(v));
    }
    out
}

/// One JSON object per finding, then one per view (`"kind":"view"`).
pub fn json_lines(findings: &[Finding], views: &[ViewReport]) -> String {
    let mut out = String::new();
    for f in findings {
        out.push_str(&serde_json::to_string(f).unwrap_or_default());
        out.push('\n');
    }
    for v in views {
        let mut j = serde_json::to_value(v).unwrap_or_default();
        if let Some(o) = j.as_object_mut() {
            o.insert("kind".into(), "view".into());
        }
        out.push_str(&j.to_string());
        out.push('\n');
    }
    out
}

/// CSV with a header row; views are rows of kind `view` (name, status in `state`, text in `note`).
pub fn csv(findings: &[Finding], views: &[ViewReport]) -> String {
    let mut out = String::from("kind,pid,tgid,name,state,address,seen_by,note\n");
    for f in findings {
        let note = f.note.clone().unwrap_or_default();
        let _ = writeln!(out, "{},{},{},{},{},{:#x},{},{}", kind(f.kind), opt(f.pid), opt(f.tgid), csv_field(&f.name), csv_field(&f.state), f.address, csv_field(&seen_by(f)), csv_field(&note));
    }
    for v in views {
        let _ = writeln!(out, "view,-,-,{},{},-,,{}", v.view.name(), status(v.status), csv_field(&view_text(v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::introspect::hidden::View;

    #[test]
    fn one_record_per_finding_then_per_view() {
        let f = vec![
            Finding { kind: Kind::Task, pid: Some(42), tgid: Some(42), name: "sleep".into(), address: 0xffff_8880_0123_4000, seen_by: vec![View::Pid, View::Scan], state: "S".into(), note: None },
            Finding { kind: Kind::Module, pid: None, tgid: None, name: "ts_kmp".into(), address: 0xffff_ffff_c012_3000, seen_by: vec![View::ModTree], state: "Live".into(), note: None },
        ];
        let mut v = ViewReport::new(View::Pid, Status::Ran, "init_pid_ns IDR");
        (v.seen, v.off_list) = (93, 1);
        let views = vec![v, ViewReport::new(View::Scan, Status::Skipped, "not asked for")];
        insta::assert_snapshot!(table(&f, &views), @r"
        KIND       PID    TGID NAME   STATE     ADDRESS            SEEN_BY              NOTE
        task        42      42 sleep  S         0xffff888001234000 pid,scan
        module       -       - ts_kmp Live      0xffffffffc0123000 mod_tree
        # view pid ran: 93 seen, 1 off the list; init_pid_ns IDR
        # view scan skipped: 0 seen, 0 off the list; not asked for
        ");
        assert_eq!(json_lines(&f, &views).lines().count(), 4);
        assert!(json_lines(&f, &views).lines().nth(2).unwrap().contains(r#""kind":"view""#));
        assert_eq!(csv(&f, &views).lines().count(), 5);
    }
}
