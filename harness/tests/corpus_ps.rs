//! `ps` over every corpus kernel, running and panicked, against the guest's own /proc truth.
//!
//! Tolerated differences are exactly those of `introspect::compare` (kernel threads coming and
//! going or changing state, kworker descriptions, the recording agent's R/S race).

mod common;

use common::*;
use harness::introspect::compare::compare;
use harness::introspect::layout::{LayoutError, LayoutInputs, MethodKind};
use harness::introspect::ps::PsError;
use rstest::rstest;

#[rstest]
fn auto_matches_truth(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str,
    #[values("running", "panicked")] m: &str,
) {
    let e = entry(name);
    let m = mode(m);
    let inputs = LayoutInputs::default();
    let report = run(&e, m, MethodKind::Auto, inputs).unwrap_or_else(|err| panic!("{name} {}: {err}", m.as_str()));
    assert!(report.walk_error.is_none(), "{name}: walk stopped early: {:?}", report.walk_error);
    let c = compare(&report.rows, &truth(&e, m));
    assert!(c.is_exact(), "{name} {} (method {}):\n{}", m.as_str(), report.method, c.describe());
    assert_eq!(report.kernel.release, e.release);
}

/// The result a method must give on an entry: exact where its prerequisite exists, a refusal
/// where it does not.
#[rstest]
fn each_method_where_its_prerequisite_exists(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str,
    #[values("running", "panicked")] m: &str,
    #[values(MethodKind::Btf, MethodKind::Thesis, MethodKind::Heuristic)] method: MethodKind,
) {
    let e = entry(name);
    let m = mode(m);
    let has = match method {
        MethodKind::Btf => e.flags.btf,
        MethodKind::Thesis => e.flags.ikconfig,
        // Needs nothing but tasks in memory.
        MethodKind::Heuristic => true,
        _ => unreachable!(),
    };
    let inputs = LayoutInputs::default();
    let result = run(&e, m, method, inputs);
    // RANDSTRUCT: a layout computed from the config alone (thesis) cannot know the build's
    // seed; it must fail — an error or a walk that stops — rather than list garbage as truth.
    if method == MethodKind::Thesis && name == "custom-randstruct" {
        match result {
            Err(_) => {}
            Ok(report) => {
                let c = compare(&report.rows, &truth(&e, m));
                assert!(report.walk_error.is_some() || !c.is_exact(), "thesis on randstruct cannot be right");
            }
        }
        return;
    }
    if has {
        let report = result.unwrap_or_else(|err| panic!("{name}: {method} should work: {err}"));
        let c = compare(&report.rows, &truth(&e, m));
        {
            assert!(report.walk_error.is_none());
            assert!(c.is_exact(), "{name} {} {method}:\n{}", m.as_str(), c.describe());
        }
    } else {
        match result {
            Err(PsError::Layout(LayoutError::Unavailable { method: got, reason })) => {
                assert_eq!(got, method);
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("{name}: {method} should refuse as unavailable, got {other}"),
            Ok(_) => panic!("{name}: {method} has no prerequisite here but produced a listing"),
        }
    }
}

/// `static` is right exactly for kernels whose true offsets (reference/layout.json, from the
/// kernel's own build) equal its constants, and wrong — an error or a wrong listing — elsewhere.
#[rstest]
fn static_is_right_only_where_its_offsets_are(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str,
) {
    let e = entry(name);
    let m = harness::lab::corpus::Mode::Running;
    let result = run(&e, m, MethodKind::Static, LayoutInputs::default());
    let exact = match &result {
        Ok(r) => r.walk_error.is_none() && compare(&r.rows, &truth(&e, m)).is_exact(),
        Err(_) => false,
    };
    let reference = e.layout().unwrap_or_else(|err| panic!("{name}: {err}; {BUILD}"));
    let fits = static_fits(&reference);
    assert_eq!(exact, fits, "{name}: static exact = {exact}, its offsets match the reference = {fits}");
}

/// The isf method refuses without a file.
#[test]
fn isf_without_a_file_is_unavailable() {
    let e = entry("deb-amd64");
    match run(&e, harness::lab::corpus::Mode::Running, MethodKind::Isf, LayoutInputs::default()) {
        Err(PsError::Layout(LayoutError::Unavailable { method: MethodKind::Isf, .. })) => {}
        other => panic!("expected unavailable, got {:?}", other.map(|r| r.rows.len())),
    }
}

/// The workload's rows, pinned.
#[rstest]
fn workload_snapshot(
    #[values(
        "deb-amd64",
        "deb-cloud-amd64",
        "deb-rt-amd64",
        "custom-thesis",
        "custom-randstruct",
        "deb5.10-amd64",
        "deb6.12-amd64",
        "deb7-amd64"
    )]
    name: &str,
    #[values("running", "panicked")] m: &str,
) {
    let e = entry(name);
    let inputs = LayoutInputs::default();
    let report = run(&e, mode(m), MethodKind::Auto, inputs).unwrap_or_else(|err| panic!("{name}: {err}"));
    insta::assert_snapshot!(format!("workload-{name}-{m}"), workload_projection(&report.rows).join("\n"));
}

/// Every dump format the lab wrote (ELF, kdump, raw) gives the same listing.
#[rstest]
fn every_image_format_gives_the_same_rows(
    #[values("deb-amd64", "custom-thesis")] name: &str,
    #[values("running", "panicked")] m: &str,
) {
    use harness::introspect::ps::{ps, PsOptions};
    let e = entry(name);
    let m = mode(m);
    let record = e.mode(m).unwrap_or_else(|| panic!("{name}: no {} mode; {BUILD}", m.as_str()));
    assert!(record.dumps.len() >= 2, "{name}: expected extra dump formats; {BUILD}");
    let inputs = LayoutInputs::default();
    let mut listings = Vec::new();
    for d in &record.dumps {
        let mem = harness::introspect::source::open_image(&e.path(&d.path), None).unwrap_or_else(|err| panic!("{err}"));
        let r = ps(mem.as_ref(), &PsOptions { method: Some(MethodKind::Auto), inputs: inputs.clone(), ..Default::default() })
            .unwrap_or_else(|err| panic!("{name} {}: {err}", d.format.as_str()));
        listings.push((d.format.as_str(), r.rows));
    }
    for (f, rows) in &listings[1..] {
        assert_eq!(rows, &listings[0].1, "{name}: {f} differs from {}", listings[0].0);
    }
}

/// `profile --format isf` writes a Volatility 3 ISF that the `isf` method reads back to the
/// same, exact listing (full BTF conversion where the kernel has BTF, the learned layout
/// otherwise).
#[rstest]
fn isf_profile_round_trips(
    #[values("deb-amd64", "deb-rt-amd64", "custom-thesis", "custom-randstruct", "deb5.10-amd64", "deb6.12-amd64", "deb7-amd64")] name: &str,
) {
    use harness::introspect::profile::{profile, ProfileFormat};
    use harness::introspect::ps::PsOptions;
    let e = entry(name);
    let m = harness::lab::corpus::Mode::Running;
    let mem = dump(&e, m);
    let inputs = LayoutInputs::default();
    let doc = profile(mem.as_ref(), &PsOptions { method: Some(MethodKind::Auto), inputs, ..Default::default() }, ProfileFormat::Isf)
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    assert_eq!(doc["metadata"]["format"], "6.2.0");
    assert!(doc["symbols"]["init_task"]["address"].is_u64(), "{name}: init_task symbol");
    assert_eq!(doc["symbols"]["init_task"]["type"]["name"], "task_struct");
    assert!(doc["symbols"]["linux_banner"]["constant_data"].is_string());
    let path = std::env::temp_dir().join(format!("netdma-isf-{}-{name}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let result = run(&e, m, MethodKind::Isf, LayoutInputs { kernel_source: None, isf: Some(path.clone()) });
    let _ = std::fs::remove_file(&path);
    let report = result.unwrap_or_else(|err| panic!("{name}: isf: {err}"));
    let c = compare(&report.rows, &truth(&e, m));
    assert!(c.is_exact(), "{name} via ISF:\n{}", c.describe());
}
