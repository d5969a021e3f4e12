//! The module list walker and the `inferred` layout on a fuzzed list (`modules::snapshot`
//! format: the `modules` head and the first bytes of each `struct module`): the structural
//! inference, the walk with what it inferred and with the layouts BTF gives on the corpus's
//! Debian kernels (5.10 and 6.1 `core_layout`, 6.12 and 7.2 `mem[]`), and the renderings; and
//! the module area scan's test for a `struct module` head (`modules::area::candidates`) on the
//! same bytes. The seed is deb-amd64's list cut from its running dump.
#![no_main]

use harness::introspect::modules::area::candidates;
use harness::introspect::modules::layout::{Memory, ModuleLayout, Users};
use harness::introspect::modules::list::MAX_MODULES;
use harness::introspect::modules::render::render;
use harness::introspect::modules::snapshot::Snapshot;
use harness::introspect::output::Format;
use libfuzzer_sys::fuzz_target;

fn debian(span: u64, memory: Memory, taints: u64, refcnt: u64) -> ModuleLayout {
    let users = Users { source_list: refcnt - 40, init: Some(refcnt - 48), exit: refcnt - 8, use_node: 0, use_source: 32 };
    ModuleLayout { span, state: 0, list: 8, name: 24, name_len: 56, memory, taints: Some(taints), refcnt: Some(refcnt), users: Some(users) }
}

fuzz_target!(|data: &[u8]| {
    for (addr, name, state, ..) in candidates(0xffff_ffff_c000_0000, data) {
        assert!(addr % 64 == 0 && state <= 3 && !name.is_empty() && name.len() < 56, "{addr:#x} {name:?} {state}");
    }
    let Some(s) = Snapshot::parse(data) else { return };
    let mut layouts = vec![
        debian(896, Memory::Layouts { core: 320, init: 400, data: None, base: 0, size: 8 }, 504, 856),
        debian(960, Memory::Layouts { core: 384, init: 464, data: None, base: 0, size: 8 }, 568, 904),
        debian(1280, Memory::Array { offset: 320, count: 7, stride: 72, base: 0, size: 8 }, 848, 1208),
        debian(1280, Memory::Array { offset: 320, count: 7, stride: 72, base: 0, size: 12 }, 864, 1224),
    ];
    if let Ok(i) = s.infer() {
        assert!(i.layout.check().is_ok(), "inferred a layout that fails its own check: {:?}", i.layout);
        layouts.push(i.layout);
    }
    for l in &layouts {
        let w = s.walk(l);
        assert!(w.modules.len() + w.unformed <= MAX_MODULES);
        for f in [Format::Table, Format::Json, Format::Csv] {
            let _ = render(&w.modules, f);
        }
    }
});
