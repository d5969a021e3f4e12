//! `kbuild::offsets` on a clean linux-source-6.1 tree with a kernel's config (what the "thesis"
//! layout method does with a config recovered from memory) reproduces the layout measured in that
//! kernel's own build directory.

mod labsupport;

use labsupport::{entry, BUILD_HINT};
use harness::kbuild::{analysis_fields, offsets};
use harness::lab::cache::Cache;
use rstest::rstest;

#[rstest]
fn fresh_tree_with_config_reproduces_the_build_layout(#[values("custom-thesis")] name: &str) {
    let e = entry(name);
    let tree = Cache::open_default().source(&e.kernel_version).join("linux-source-6.1");
    assert!(tree.join("Makefile").is_file(), "{}: no source tree; {BUILD_HINT}", tree.display());
    let layout = offsets(&tree, Some(&e.config_path()), &analysis_fields()).expect("kbuild offsets");
    assert_eq!(layout, e.layout().unwrap(), "{name}");
    assert_eq!(layout.digest(), e.layout_digest);
}

#[test]
fn unprepared_tree_is_an_error_not_a_guess() {
    let dir = std::env::temp_dir().join(format!("netdma-unprepared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = offsets(&dir, None, &analysis_fields()).unwrap_err();
    assert!(err.to_string().contains("not a prepared kernel tree"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
