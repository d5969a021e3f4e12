//! Target strings: `nettlp://ADDR[:TAG][?key=value&...]`, and the requester's settings.
//!
//! - `ADDR`: the NetTLP adapter's (or `emulator serve`'s) IPv4 address.
//! - `TAG`: the first PCIe tag this requester uses (default 0). Tags are what tell completions
//!   apart; the UDP port of a tag is `0x3000 + tag` at both ends, the whole 8-bit tag (libtlp's
//!   `nettlp_init`; the adapter sends each completion to `0x3000 + tag`). The requester uses
//!   `tags` tags, `TAG, TAG+stride, TAG+2*stride...`, and binds the port of every one, so two
//!   requesters on one local address must use disjoint tags (`nettlp://ADDR:128?tags=128`).
//!
//! Options: `local=IP` (address to bind; default: the route's source address, or for a
//! loopback target a free loopback address: 127.0.0.254, else one in 127.254.0.0/16),
//! `tags=N` (default 256: every tag, so a freed tag is reused as late as possible, see
//! [`super::tags`]), `stride=S` (default 1), `inflight=N` (requests outstanding at once,
//! default 64: at the adapter's 12 µs per read, 32 reads of 512 bytes in flight fill a 10 GbE
//! path, but batches of small reads and an endpoint answering in 30-200 µs (the emulator on a
//! shared host) need more: a 10,094-task listing took 270 ms at 32, 225 at 64, 180 at 128; at
//! 128, 4 KiB reads at 5 % loss asked again more than the bytes lost (requests queued behind
//! 0.5 MB of answers time out at a batch's end), so 64; a quarter of the tags, the rest free to
//! be held after a stall, see [`super::tags`]), `mrrs=BYTES` (max read request size, default 512 like the
//! adapter), `timeout=DUR` (floor of the retransmission timeout, default 200us; the wait follows
//! measured round trips and doubles per retry, see [`super::rto`]), `retries=N` (how many times
//! a missing byte is asked again before the read fails, default 16), `lifetime=DUR` (how
//! long a tag rests after a timeout, or from its last send while the network is suspect, at
//! least 4 x RTO, default 5ms; what keeps a stale copy out is the alias rule, see
//! [`super::tags`]),
//! `port=first|tag` (`first`, the default: every request on the first tag's port, so a batch
//! of requests goes out as one UDP GSO message and, from an endpoint that answers to the
//! request's source as the emulator does, its completions come back coalesced (UDP GRO);
//! `tag`: each request on its tag's port, libtlp's rule, one system call per datagram — the
//! adapter's semantics are the same either way: MRd/CplD TLPs of at most MRRS/MPS bytes, each
//! completion taken on whichever tag port it arrives), `spin=DUR` (busy-poll this long
//! for the next completion before sleeping, default 0: spinning only pays when both ends have
//! a core to themselves), `requester=auto|BB:DD.F` (requester ID; `auto` asks the adapter's
//! messaging port for its device ID, like libtlp's `-R`), `reuseaddr=1` (bind the ports with
//! SO_REUSEADDR, so they can sit beside an emulated fleet bound to the wildcard address on this
//! host, `emulator serve --listen RANGE`; the sockets are connected, so each still receives
//! only its peer's datagrams; default 0: a port taken is an error).
//!
//! Invariant: a parsed [`Target`] is usable as is: tags are distinct and below 256, the MRRS
//! is a power of two in 4..=4096, `inflight` is in 1..=tags.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::time::Duration;

use emulator::units::parse_duration;
use emulator::wire::tlp::DeviceId;

/// Why a target string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target {0:?}: expected nettlp://ADDR[:TAG][?key=value&...]")]
    Syntax(String),
    #[error("target option {key}={value:?}: {reason}")]
    Option { key: String, value: String, reason: String },
    #[error("target: unknown option {0:?} (known: local, tags, stride, inflight, mrrs, timeout, retries, lifetime, port, spin, requester, reuseaddr)")]
    UnknownOption(String),
}

/// How the requester ID is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequesterId {
    /// Ask the adapter (messaging port 0x2FFF, GET_DEV_ID).
    Auto,
    Fixed(DeviceId),
}

/// Which UDP port a request goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRule {
    /// `0x3000 + tag` at both ends (libtlp).
    Tag,
    /// The first tag's port for every request (one socket, so batches are one GSO message):
    /// the default.
    First,
}

/// Where to send reads and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub remote: Ipv4Addr,
    pub local: Option<Ipv4Addr>,
    pub first_tag: u8,
    pub tags: u16,
    pub stride: u8,
    pub inflight: u16,
    pub mrrs: u32,
    pub timeout: Duration,
    pub retries: u32,
    pub lifetime: Duration,
    pub port: PortRule,
    pub spin: Duration,
    pub requester: RequesterId,
    /// Bind the ports with SO_REUSEADDR.
    pub reuseaddr: bool,
}

impl Target {
    /// Defaults for `remote`.
    pub fn new(remote: Ipv4Addr) -> Target {
        Target {
            remote,
            local: None,
            first_tag: 0,
            tags: 256,
            stride: 1,
            inflight: 64,
            mrrs: 512,
            timeout: Duration::from_micros(200),
            retries: 16,
            lifetime: Duration::from_millis(5),
            port: PortRule::First,
            spin: Duration::ZERO,
            requester: RequesterId::Auto,
            reuseaddr: false,
        }
    }

    /// The tags used, in allocation order.
    pub fn tag_list(&self) -> Vec<u8> {
        (0..self.tags)
            .map(|k| (u32::from(self.first_tag) + u32::from(k) * u32::from(self.stride)) as u8)
            .collect()
    }

    /// Check the invariants (also run by `FromStr`).
    pub fn validate(&self) -> Result<(), TargetError> {
        let opt = |key: &str, value: String, reason: &str| TargetError::Option {
            key: key.into(),
            value,
            reason: reason.into(),
        };
        if self.tags == 0 || self.stride == 0 {
            return Err(opt("tags", self.tags.to_string(), "need at least one tag and a non-zero stride"));
        }
        let last = u32::from(self.first_tag) + (u32::from(self.tags) - 1) * u32::from(self.stride);
        if last > 255 {
            return Err(opt("tags", self.tags.to_string(), &format!("tag {last} would exceed 255")));
        }
        if !(1..=self.tags).contains(&self.inflight) {
            return Err(opt("inflight", self.inflight.to_string(), "must be in 1..=tags"));
        }
        if !self.mrrs.is_power_of_two() || !(4..=4096).contains(&self.mrrs) {
            return Err(opt("mrrs", self.mrrs.to_string(), "must be a power of two in 4..=4096"));
        }
        if self.timeout.is_zero() {
            return Err(opt("timeout", "0".into(), "must be positive"));
        }
        if self.lifetime.is_zero() {
            return Err(opt("lifetime", "0".into(), "must be positive"));
        }
        Ok(())
    }
}

fn parse_devid(s: &str) -> Option<DeviceId> {
    let (bus, rest) = s.split_once(':')?;
    let (dev, func) = rest.split_once('.').unwrap_or((rest, "0"));
    let (bus, dev, func) = (
        u8::from_str_radix(bus, 16).ok()?,
        u8::from_str_radix(dev, 16).ok()?,
        func.parse::<u8>().ok()?,
    );
    (dev <= 31 && func <= 7).then(|| DeviceId::new(bus, dev, func))
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(s: &str) -> Result<Target, TargetError> {
        let syntax = || TargetError::Syntax(s.to_owned());
        let rest = s.strip_prefix("nettlp://").ok_or_else(syntax)?;
        let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, tag) = match hostport.split_once(':') {
            Some((h, t)) => (h, Some(t)),
            None => (hostport, None),
        };
        let mut t = Target::new(host.parse().map_err(|_| syntax())?);
        if let Some(tag) = tag {
            t.first_tag = tag.parse().map_err(|_| syntax())?;
        }
        let mut inflight_given = false;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (key, value) = kv.split_once('=').ok_or_else(syntax)?;
            let bad = |reason: &str| TargetError::Option {
                key: key.into(),
                value: value.into(),
                reason: reason.into(),
            };
            let num = || value.parse::<u32>().map_err(|_| bad("not an unsigned integer"));
            let dur = || parse_duration(value).ok_or_else(|| bad("expected a duration like 500us, 20ms"));
            match key {
                "local" => t.local = Some(value.parse().map_err(|_| bad("not an IPv4 address"))?),
                "tags" => t.tags = num()?.try_into().map_err(|_| bad("too many"))?,
                "stride" => t.stride = num()?.try_into().map_err(|_| bad("at most 255"))?,
                "inflight" => {
                    t.inflight = num()?.try_into().map_err(|_| bad("too many"))?;
                    inflight_given = true;
                }
                "mrrs" => t.mrrs = num()?,
                "timeout" => t.timeout = dur()?,
                "retries" => t.retries = num()?,
                "spin" => t.spin = dur()?,
                "lifetime" => t.lifetime = dur()?,
                "port" => {
                    t.port = match value {
                        "tag" => PortRule::Tag,
                        "first" => PortRule::First,
                        _ => return Err(bad("expected tag or first")),
                    }
                }
                "requester" => {
                    t.requester = match value {
                        "auto" => RequesterId::Auto,
                        v => RequesterId::Fixed(parse_devid(v).ok_or_else(|| bad("expected auto or bb:dd.f"))?),
                    }
                }
                "reuseaddr" => {
                    t.reuseaddr = match value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        _ => return Err(bad("expected 0 or 1")),
                    }
                }
                other => return Err(TargetError::UnknownOption(other.into())),
            }
        }
        if !inflight_given {
            t.inflight = t.inflight.min(t.tags);
        }
        t.validate()?;
        Ok(t)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nettlp://{}:{}?tags={}&stride={}&inflight={}&mrrs={}&timeout={}us&retries={}&lifetime={}us&port={}&spin={}us",
            self.remote,
            self.first_tag,
            self.tags,
            self.stride,
            self.inflight,
            self.mrrs,
            self.timeout.as_micros(),
            self.retries,
            self.lifetime.as_micros(),
            match self.port {
                PortRule::Tag => "tag",
                PortRule::First => "first",
            },
            self.spin.as_micros()
        )?;
        if let Some(l) = self.local {
            write!(f, "&local={l}")?;
        }
        if self.reuseaddr {
            write!(f, "&reuseaddr=1")?;
        }
        match self.requester {
            RequesterId::Auto => write!(f, "&requester=auto"),
            RequesterId::Fixed(id) => write!(f, "&requester={id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_the_adapters_sizes() {
        let t: Target = "nettlp://192.168.10.1".parse().unwrap();
        assert_eq!(t, Target::new(Ipv4Addr::new(192, 168, 10, 1)));
        assert_eq!(t.tag_list(), (0..=255).collect::<Vec<u8>>());
        assert_eq!((t.mrrs, t.inflight, t.port), (512, 64, PortRule::First));
        assert_eq!(t.timeout, Duration::from_micros(200), "a floor in microseconds");
        assert_eq!(t.lifetime, Duration::from_millis(5));
        let few: Target = "nettlp://192.168.10.1?tags=4".parse().unwrap();
        assert_eq!(few.inflight, 4);
    }

    #[test]
    fn tag_and_options() {
        let t: Target = "nettlp://127.0.0.2:4?tags=8&stride=16&inflight=3&mrrs=4096&timeout=2ms&retries=9&lifetime=20ms&port=tag&local=127.0.0.3&requester=1b:00.0&reuseaddr=1"
            .parse()
            .unwrap();
        assert_eq!(t.tag_list(), vec![4, 20, 36, 52, 68, 84, 100, 116]);
        assert_eq!(t.inflight, 3);
        assert_eq!(t.timeout, Duration::from_millis(2));
        assert_eq!(t.lifetime, Duration::from_millis(20));
        assert_eq!(t.port, PortRule::Tag);
        assert_eq!(t.local, Some(Ipv4Addr::new(127, 0, 0, 3)));
        assert_eq!(t.requester, RequesterId::Fixed(DeviceId(0x1b00)));
        assert!(t.reuseaddr);
        // Display round-trips
        assert_eq!(t.to_string().parse::<Target>().unwrap(), t);
    }

    #[test]
    fn rejects_what_cannot_work() {
        for bad in [
            "127.0.0.1",
            "nettlp://localhost",
            "nettlp://127.0.0.1:256",
            "nettlp://127.0.0.1?tags=17&stride=16",
            "nettlp://127.0.0.1:250?tags=7",
            "nettlp://127.0.0.1?tags=0",
            "nettlp://127.0.0.1?tags=16&inflight=17",
            "nettlp://127.0.0.1?mrrs=300",
            "nettlp://127.0.0.1?timeout=0ms",
            "nettlp://127.0.0.1?colour=blue",
            "nettlp://127.0.0.1?requester=zz",
            "nettlp://127.0.0.1?reuse=auto",
            "nettlp://127.0.0.1?lifetime=0s",
            "nettlp://127.0.0.1?port=0x3000",
            "nettlp://127.0.0.1?reuseaddr=yes",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
