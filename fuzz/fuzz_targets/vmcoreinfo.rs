//! A VMCOREINFO note's text (from an ELF or kdump header, or guest memory): parse and every
//! accessor `harness` uses.
#![no_main]

use harness::introspect::vmcoreinfo::VmcoreInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let v = VmcoreInfo::parse(data);
    let _ = (v.osrelease(), v.kernel_offset(), v.is_empty());
    for s in ["init_task", "swapper_pg_dir", "_stext", "init_uts_ns", "phys_base"] {
        let _ = v.symbol(s);
    }
    for f in ["task_struct.tasks", "list_head.next", "page.flags"] {
        let _ = v.offset(f);
    }
    let _ = (v.size("task_struct"), v.number("PAGE_OFFSET"), v.number("phys_base"), v.get("PAGESIZE"));
});
