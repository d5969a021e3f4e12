use harness::introspect::{kernel::Kernel, scan::ScanConfig, source, walk, layout, anchor};
fn main() {
    let path = std::env::args().nth(1).unwrap();
    let mem = source::open_image(path.as_ref(), None).unwrap();
    let found = Kernel::scan(mem.as_ref(), &ScanConfig::default()).unwrap();
    let mut k = Kernel::open(mem.as_ref(), found).unwrap();
    let inputs = layout::LayoutInputs { kernel_source: Some("/usr/src/linux-source-6.1.tar.xz".into()), isf: None };
    let (_, l) = layout::learn(layout::MethodKind::Thesis, &mut k, &inputs, &|_, _| Ok(())).unwrap();
    anchor::complete(&mut k, &l).unwrap();
    let it = k.info.init_task.unwrap();
    println!("init flags {:#x}", k.space.read_u32(it.wrapping_add(l.task.flags)).unwrap());
    let out = walk::walk(&k.space, &l, it, walk::WalkConfig::default());
    for t in &out.threads { if t.flags & 0x80000002 != 0 { println!("{} {:#x}", t.pid, t.flags); } }
}
