//! `harness watch`: one machine listed every interval; its process events as lines or JSON Lines.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use clap::{Args, ValueEnum};
use emulator::mem::Counting;
use harness::failure::{Failure, FailureKind};
use harness::introspect::watch::{Event, EventKind, RoundStats, Watcher};

use crate::cmd_ps::SourceArgs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WatchFormat {
    /// `TIME EVENT pid P tgid T ppid Q uid U COMM [was ...] CMDLINE`, one event per line.
    Lines,
    /// One JSON object per event: the time noticed (`time`, `time_unix_ms`) and the event.
    Jsonl,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    src: SourceArgs,
    /// Time from the start of one round to the start of the next (e.g. 1s, 100ms); a round
    /// that takes longer is followed at once by the next.
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Stop after this many rounds after the initial listing (default: until interrupted).
    #[arg(long)]
    rounds: Option<u64>,
    #[arg(long, value_enum, default_value = "lines")]
    format: WatchFormat,
    /// One JSON line per round on stderr: when it ended (`time_unix_ms`), its time, CPU, DMA
    /// reads and bytes, tasks, events, and how much memory changed under the walk.
    #[arg(long)]
    stats: bool,
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    emulator::units::parse_duration(s).filter(|d| !d.is_zero()).ok_or_else(|| format!("{s:?}: expected a positive duration like 1s, 100ms"))
}

/// One event as printed, with the host time at which the round that noticed it ended.
#[derive(serde::Serialize)]
struct Noticed<'e> {
    time: String,
    time_unix_ms: u128,
    #[serde(flatten)]
    event: &'e Event,
}

/// One `--stats` line: the round's cost, and the host time it ended.
#[derive(serde::Serialize)]
struct Timed<'s> {
    time_unix_ms: u128,
    #[serde(flatten)]
    stats: &'s RoundStats,
}

fn unix_ms(at: SystemTime) -> u128 {
    at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn line(at: SystemTime, e: &Event, format: WatchFormat) -> Result<String> {
    let time = humantime::format_rfc3339_millis(at).to_string();
    Ok(match format {
        WatchFormat::Jsonl => {
            serde_json::to_string(&Noticed { time, time_unix_ms: unix_ms(at), event: e })?
        }
        WatchFormat::Lines => {
            let what = match e.event {
                EventKind::Started => "started",
                EventKind::Exited => "exited ",
                EventKind::Comm => "comm   ",
                EventKind::Uid => "uid    ",
            };
            let was = e.was.as_deref().map(|w| format!(" (was {w})")).unwrap_or_default();
            format!("{time} {what} pid {} tgid {} ppid {} uid {} {:?}{was} {}", e.pid, e.tgid, e.ppid, e.uid, e.comm, e.cmdline)
        }
    })
}

pub fn run(args: WatchArgs) -> Result<()> {
    let mem = args.src.open()?;
    let counted = Counting::new(mem.as_ref());
    let (mut w, first) = Watcher::start(&counted, &args.src.options())
        .map_err(|e| Failure::new(FailureKind::of_ps(&e), format!("learning the machine: {e}")))?;
    tracing::info!(tasks = first.stats.tasks, ms = first.stats.wall_ms, bytes = first.stats.dma_bytes, "initial listing; watching");
    if args.stats {
        eprintln!("{}", serde_json::to_string(&Timed { time_unix_ms: unix_ms(SystemTime::now()), stats: &first.stats })?);
    }
    let mut next = Instant::now() + args.interval;
    let mut done = 0u64;
    while args.rounds.is_none_or(|n| done < n) {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next = (next + args.interval).max(Instant::now());
        let round = w.round();
        done += 1;
        let at = SystemTime::now();
        let mut out = std::io::stdout().lock();
        for e in &round.events {
            writeln!(out, "{}", line(at, e, args.format)?)?;
        }
        out.flush()?;
        if let Some(err) = &round.stats.walk_error {
            tracing::warn!(round = round.stats.round, "walk cut short, no exits reported this round: {err}");
        }
        if args.stats {
            eprintln!("{}", serde_json::to_string(&Timed { time_unix_ms: unix_ms(at), stats: &round.stats })?);
        }
    }
    Ok(())
}
