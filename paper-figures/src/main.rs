//! `paper-figures`: renders `results/*.csv` into `paper-figures/out/`.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("no figures yet: see issue 5")
}
