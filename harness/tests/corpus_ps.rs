//! `ps` over every corpus kernel, running and panicked, against the guest's own /proc truth.
//!
//! Tolerated differences are exactly those of `introspect::compare` (kernel threads coming and
//! going or changing state, kworker descriptions, the recording agent's R/S race).

mod common;
mod labsupport;

use common::*;
use harness::introspect::compare::compare;
use harness::introspect::layout::{LayoutError, LayoutInputs, MethodKind};
use harness::introspect::ps::PsError;
use harness::introspect::pidns::MAX_SAMPLES;
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
            // The pid allocator named every task: only the leaders an inferred index learns
            // from (and none with BTF) were read one list hop at a time.
            let ix = &report.stats.index;
            assert!(ix.error.is_none(), "{name} {method}: pid index: {:?}", ix.error);
            assert!(ix.used + MAX_SAMPLES >= report.rows.len(), "{name} {method}: {ix:?} for {} tasks", report.rows.len());
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

/// On kernels with neither BTF nor data symbols in kallsyms, the ISF carries what Volatility 3's
/// Linux stacker and `linux.pslist` need, inferred from memory (`introspect::globals`): the
/// globals `init_top_pgt`, `init_mm`, `init_files` at the kernel's own addresses (System.map),
/// `task_struct.active_mm` and `cred` at kbuild's offsets (on a randomized layout, where memory
/// shows `mm` and `active_mm`, `real_cred` and `cred`, only as two fields with the same value,
/// as the same pairs), `files`,
/// and `cred`'s ids in the declared order where the layout is not randomized.
#[rstest]
fn isf_without_btf_has_what_volatility_needs(
    #[values(
        "custom-bare",
        "custom-thesis",
        "custom-randstruct",
        "custom-smp-preempt-kaslr",
        "custom7-modules",
        "custom-modules",
        "custom5.10-modules",
        "custom6.12-modules",
        "custom5.10-bare",
        "custom5.10-thesis",
        "custom6.12-bare",
        "custom6.12-thesis",
        "custom7-bare",
        "custom7-thesis",
        "custom7-randstruct"
    )]
    name: &str,
    #[values("running", "panicked")] m: &str,
) {
    use harness::introspect::profile::{profile, ProfileFormat};
    use harness::introspect::ps::PsOptions;
    let e = entry(name);
    let mem = dump(&e, mode(m));
    let doc = profile(mem.as_ref(), &PsOptions { method: Some(MethodKind::Auto), ..Default::default() }, ProfileFormat::Isf)
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    let sm = labsupport::system_map(&e);
    for sym in ["init_top_pgt", "init_mm", "init_files", "init_task"] {
        assert_eq!(doc["symbols"][sym]["address"].as_u64(), sm.get(sym).copied(), "{name} {m}: {sym}");
    }
    let reference = e.layout().expect("reference/layout.json");
    let field = |f: &str| doc["user_types"]["task_struct"]["fields"][f]["offset"].as_u64();
    let kbuild = |f: &str| reference.offset(&format!("task_struct.{f}"));
    let randomized = name.contains("randstruct");
    for (a, b) in [("mm", "active_mm"), ("real_cred", "cred")] {
        if randomized {
            let mut ours = [field(a), field(b)];
            let mut theirs = [kbuild(a), kbuild(b)];
            ours.sort();
            theirs.sort();
            assert_eq!(ours, theirs, "{name} {m}: {a} and {b}");
        } else {
            assert_eq!((field(a), field(b)), (kbuild(a), kbuild(b)), "{name} {m}");
        }
    }
    assert!(field("files").is_some(), "{name} {m}: task_struct.files");
    let cred = &doc["user_types"]["cred"]["fields"];
    let uid = cred["uid"]["offset"].as_u64().expect("cred.uid");
    // A randomized `struct cred` scatters uid, suid, euid and fsuid, equal in every task here.
    if !randomized {
        assert_eq!(Some(uid), reference.offset("cred.uid"), "{name} {m}: cred.uid");
        let ids: Vec<Option<u64>> = ["gid", "euid", "egid"].iter().map(|f| cred[f]["offset"].as_u64()).collect();
        assert_eq!(ids, vec![Some(uid + 4), Some(uid + 16), Some(uid + 20)], "{name} {m}: cred ids");
    }
}
