//! `experiments`: drivers that measure the workbench and write `results/*.csv`.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("no experiments yet: see issue 5")
}
