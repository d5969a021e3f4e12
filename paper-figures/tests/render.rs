//! Figures render from results files built here out of the real NetTLP hardware data; absent
//! inputs are skipped, malformed ones are errors; the committed figures are what the renderer
//! makes of the committed results.

use std::path::{Path, PathBuf};

use experiments::results::{self, Stamp};
use experiments::wire::{WireLatency, WireRun, WireThroughput};
use experiments::{hw_reference, Context, Experiment};
use paper_figures::{style, Outcome};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn context(results_dir: &Path) -> Context {
    Context {
        hw_reference: repo().join(hw_reference::DEFAULT_RELATIVE),
        results_dir: results_dir.to_owned(),
        repo: repo(),
        quick: true,
        only_kernels: Vec::new(),
    }
}

/// Writes `results/<name>.csv` from the hardware runs of `exp` with at most `max_bytes` per read.
fn fixture<E: Experiment<Run = WireRun>>(exp: &E, dir: &Path, max_bytes: u64) {
    let ctx = context(dir);
    let stamp = Stamp {
        git_rev: "fixture".into(),
        date_utc: "2026-01-01T00:00:00Z".into(),
        quick: true,
    };
    let mut rows = Vec::new();
    let plan = exp.plan(&ctx).unwrap();
    for run in plan
        .iter()
        .filter(|r| matches!(r, WireRun::Hardware { name, .. } if name.dma_len_bytes <= max_bytes))
    {
        rows.extend(exp.run(&ctx, run).unwrap().into_iter().map(|r| (r, stamp.clone())));
    }
    results::write_atomic(&results::path_for(dir, exp.name()), &results::to_csv(&rows).unwrap()).unwrap();
}

/// The rendered figures; every other figure must have been skipped for lack of its input.
fn rendered(outcomes: Vec<Outcome>) -> Vec<(&'static str, [PathBuf; 2])> {
    outcomes
        .into_iter()
        .filter_map(|o| match o {
            Outcome::Rendered { stem, files } => Some((stem, files)),
            Outcome::Skipped { .. } => None,
            other => panic!("expected a rendered or skipped figure, got {other:?}"),
        })
        .collect()
}

fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect()
}

/// Width, height and RGB pixels of a PNG.
fn png_pixels(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    let px = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    (info.width, info.height, px)
}

#[test]
fn wire_figures_render_from_hardware_rows() {
    let results_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    // Latency for 1, 4 and 8 bytes; throughput for 1 and 4 bytes, fix/seq x 1/16 CPUs.
    fixture(&WireLatency, results_dir.path(), 8);
    fixture(&WireThroughput, results_dir.path(), 4);

    let figs = rendered(paper_figures::render_all(results_dir.path(), out.path()));
    assert_eq!(
        figs.iter().map(|f| f.0).collect::<Vec<_>>(),
        ["wire-latency-cdf", "wire-throughput"]
    );

    let lat = svg_texts(&figs[0].1[0]);
    for want in [
        "DMA read latency (CDF)",
        "latency per read (µs, log scale)",
        "fraction of reads ≤ latency",
        "1 B",
        "4 B",
        "8 B",
    ] {
        assert!(lat.iter().any(|t| t == want), "{want:?} not in {lat:?}");
    }
    let thr = svg_texts(&figs[1].1[0]);
    for want in [
        "throughput (Gbit/s)",
        "bytes requested per read",
        "hardware, 16 CPUs, seq",
        "hardware, 1 CPU, fix",
    ] {
        assert!(thr.iter().any(|t| t == want), "{want:?} not in {thr:?}");
    }

    for (stem, [_, png]) in &figs {
        assert!(std::fs::metadata(png).unwrap().len() > 0);
        let (w, h, px) = png_pixels(png);
        assert!(w >= 1000 && h >= 700, "{stem}: {w}x{h}");
        // Text was rasterised (black pixels) and data drawn in colour.
        assert!(px.contains(&[0, 0, 0]), "{stem}: no text");
        let coloured = px
            .iter()
            .filter(|p| p[0].abs_diff(p[1]) > 40 || p[1].abs_diff(p[2]) > 40)
            .count();
        assert!(coloured > 1000, "{stem}: only {coloured} coloured pixels");
    }
    // The throughput lines use the first two categorical colours (1 and 16 CPUs).
    let (_, _, px) = png_pixels(&figs[1].1[1]);
    for c in &style::CATEGORICAL[..2] {
        assert!(px.contains(&[c.0, c.1, c.2]), "colour {c:?} missing");
    }
}

#[test]
fn absent_inputs_are_skipped() {
    let results_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let outcomes = paper_figures::render_all(results_dir.path(), out.path());
    assert!(
        outcomes.iter().all(|o| matches!(o, Outcome::Skipped { .. })),
        "{outcomes:?}"
    );
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn wrong_schema_and_empty_files_are_errors() {
    let results_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    fixture(&WireThroughput, results_dir.path(), 1);
    let path = results::path_for(results_dir.path(), "wire-throughput");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("throughput_gbps", "throughput_mbps", 1);
    std::fs::write(&path, text).unwrap();
    // Header only.
    let lat = results::path_for(results_dir.path(), "wire-latency");
    std::fs::write(&lat, results::to_csv::<experiments::wire::LatencyRow>(&[]).unwrap()).unwrap();

    let outcomes = paper_figures::render_all(results_dir.path(), out.path());
    let errors: Vec<String> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Failed { error, .. } => Some(error.to_string()),
            Outcome::Skipped { .. } => None,
            other => panic!("expected failure, got {other:?}"),
        })
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("no rows"), "{}", errors[0]);
    assert!(
        errors[1].contains("wrong schema") && errors[1].contains("throughput_mbps"),
        "{}",
        errors[1]
    );
}

#[test]
fn committed_figures_match_committed_results() {
    let results_dir = repo().join("results");
    let committed = repo().join("paper-figures/out");
    let out = tempfile::tempdir().unwrap();
    for outcome in paper_figures::render_all(&results_dir, out.path()) {
        match outcome {
            Outcome::Rendered { stem, files } => {
                for fresh in files {
                    let name = fresh.file_name().unwrap();
                    let old = std::fs::read(committed.join(name)).unwrap_or_else(|e| {
                        panic!(
                            "{stem}: paper-figures/out/{} missing ({e}); run `cargo run -p paper-figures`",
                            name.to_string_lossy()
                        )
                    });
                    assert!(
                        old == std::fs::read(&fresh).unwrap(),
                        "paper-figures/out/{} is stale; run `cargo run -p paper-figures` and commit",
                        name.to_string_lossy()
                    );
                }
            }
            Outcome::Skipped { .. } => {}
            Outcome::Failed { stem, error } => panic!("{stem}: {error}"),
        }
    }
}

/// The baseline figure from real rows (`tests/fixtures/baseline.csv`: a full `experiments run
/// baseline` on deb-amd64, where Volatility 3 lists, and custom-bare, where it fails).
#[test]
fn baseline_figure_renders_from_real_rows() {
    let results_dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("paper-figures/tests/fixtures/baseline.csv"),
        results::path_for(results_dir.path(), "baseline"),
    )
    .unwrap();
    let figs = rendered(paper_figures::render_all(results_dir.path(), out.path()));
    assert_eq!(figs.iter().map(|f| f.0).collect::<Vec<_>>(), ["baseline-volatility"]);
    let texts = svg_texts(&figs[0].1[0]);
    for want in [
        "running guest",
        "panicked guest",
        "time per listing (s, whole process, median of warm runs)",
        "netdma: harness ps",
        "Volatility 3: linux.pslist",
        "deb-amd64 · Volatility 3",
        "custom-bare · netdma",
    ] {
        assert!(texts.iter().any(|t| t == want), "{want:?} not in {texts:?}");
    }
    // Volatility's time against netdma's, and its failure on custom-bare with the reason.
    assert!(texts.iter().any(|t| t.starts_with("pslist ") && t.contains("× netdma)")), "{texts:?}");
    assert_eq!(texts.iter().filter(|t| t.starts_with("failed: the ISF lacks")).count(), 2, "{texts:?}");
    let (w, h, px) = png_pixels(&figs[0].1[1]);
    assert!(w >= 1000 && h >= 400, "{w}x{h}");
    for c in &style::CATEGORICAL[..3] {
        assert!(px.contains(&[c.0, c.1, c.2]), "colour {c:?} missing");
    }
}
