//! systemd's service notification protocol (sd_notify(3)) without
//! libsystemd: one datagram of `KEY=VALUE` lines to the socket named by
//! `$NOTIFY_SOCKET`. The daemon says READY=1 once its listeners are bound,
//! RELOADING=1/READY=1 around a SIGHUP reload, STOPPING=1 on shutdown, and
//! WATCHDOG=1 from its main loop while the runtime still schedules tasks.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The variables systemd sets for a service. They are removed from the
/// environment once read so that the tools Steward starts (pg_dump, tar,
/// hooks) do not talk to systemd in the agent's name.
const ENV_VARS: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// A send must never hold the main loop for long: the datagram is dropped
/// (and logged) if systemd does not take it within this time.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// What the environment said, read once at startup.
#[derive(Debug, Default)]
pub struct FromEnv {
    /// `None` when Steward was not started by systemd with `Type=notify`
    /// (or the socket could not be opened: see `problem`).
    pub notifier: Option<Notifier>,
    /// A variable systemd set but Steward could not use, to be logged once
    /// logging is up. The unit then times out at start; this says why.
    pub problem: Option<String>,
}

/// Sends notifications to systemd.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

/// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` and removes
/// them from the environment. Call before any other thread exists: the
/// environment is process-wide.
pub fn take_from_env() -> FromEnv {
    let socket = std::env::var_os("NOTIFY_SOCKET");
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    for var in ENV_VARS {
        std::env::remove_var(var);
    }
    let Some(socket) = socket else {
        return FromEnv::default();
    };
    let watchdog = match watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id()) {
        Ok(w) => w,
        Err(e) => {
            return FromEnv {
                notifier: None,
                problem: Some(e),
            }
        }
    };
    match Notifier::open(&socket, watchdog) {
        Ok(n) => FromEnv {
            notifier: Some(n),
            problem: None,
        },
        Err(e) => FromEnv {
            notifier: None,
            problem: Some(e),
        },
    }
}

/// The address in `$NOTIFY_SOCKET`: a path, or `@name` for a socket in the
/// abstract namespace (what systemd uses).
fn socket_addr(value: &OsStr) -> Result<SocketAddr, String> {
    let bytes = value.as_bytes();
    let shown = value.to_string_lossy();
    let addr = match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(value),
        _ => {
            return Err(format!(
                "NOTIFY_SOCKET={shown:?} is neither an absolute path nor an @abstract name; \
                 systemd notifications are off (use Type=simple or fix the unit's environment)"
            ))
        }
    };
    addr.map_err(|e| format!("NOTIFY_SOCKET={shown:?} is not a usable socket address: {e}"))
}

/// How often to send WATCHDOG=1: half of `$WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// advises, so one late ping is not yet a missed deadline. `$WATCHDOG_PID`,
/// when set, must be this process (the variables may have been inherited
/// from a parent that systemd watches).
fn watchdog_interval(
    usec: Option<&str>,
    pid: Option<&str>,
    me: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid {
        match pid.trim().parse::<u32>() {
            Ok(p) if p == me => {}
            Ok(_) => return Ok(None),
            Err(_) => {
                return Err(format!(
                    "WATCHDOG_PID={pid:?} is not a process id; systemd notifications are off"
                ))
            }
        }
    }
    match usec.trim().parse::<u64>() {
        Ok(0) | Err(_) => Err(format!(
            "WATCHDOG_USEC={usec:?} is not a positive number of microseconds; \
             systemd notifications are off (check WatchdogSec= in the unit)"
        )),
        Ok(us) => Ok(Some(Duration::from_micros(us / 2))),
    }
}

impl Notifier {
    fn open(socket: &OsStr, watchdog: Option<Duration>) -> Result<Self, String> {
        let addr = socket_addr(socket)?;
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_write_timeout(Some(SEND_TIMEOUT)).map(|()| s))
            .map_err(|e| format!("cannot open a socket for systemd notifications: {e}"))?;
        Ok(Notifier {
            socket,
            addr,
            watchdog,
        })
    }

    /// Half of the watchdog timeout, when systemd asked for pings.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// READY=1: the configuration is loaded and the listeners are bound
    /// (also the end of a reload).
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// RELOADING=1 with the CLOCK_MONOTONIC time it began, which systemd
    /// (253 and later) uses to tell this reload from an earlier one.
    pub fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000
            + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
        self.send(&format!(
            "RELOADING=1\nSTATUS=reloading the configuration\nMONOTONIC_USEC={usec}"
        ));
    }

    /// STOPPING=1: shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    /// WATCHDOG=1: the main loop is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Best effort: a lost notification shows in systemd's state (a start
    /// that times out, a restart by the watchdog), and is logged here.
    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) {
            let first = message.lines().next().unwrap_or_default();
            tracing::warn!("cannot send {first} to systemd (NOTIFY_SOCKET): {e}");
        }
    }
}

/// STATUS= ends at a newline; keep a message on its line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn socket_addresses_are_paths_or_abstract_names() {
        let a = socket_addr(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            a.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let a = socket_addr(OsStr::new("@/org/freedesktop/systemd1/notify/1")).unwrap();
        assert_eq!(
            a.as_abstract_name(),
            Some(&b"/org/freedesktop/systemd1/notify/1"[..])
        );
        let e = socket_addr(OsStr::new("relative/sock")).unwrap_err();
        assert!(e.contains("NOTIFY_SOCKET=\"relative/sock\""), "{e}");
        assert!(socket_addr(OsStr::new("")).is_err());
        let too_long = format!("/{}", "x".repeat(200));
        let e = socket_addr(OsStr::from_bytes(too_long.as_bytes())).unwrap_err();
        assert!(e.contains("not a usable socket address"), "{e}");
    }

    #[test]
    fn watchdog_pings_at_half_the_timeout_for_this_process_only() {
        assert_eq!(watchdog_interval(None, None, 7), Ok(None));
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Ok(Some(Duration::from_secs(15)))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Ok(Some(Duration::from_secs(15)))
        );
        // Inherited from a watched parent: not ours to ping.
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), Ok(None));
        assert!(watchdog_interval(Some("0"), None, 7).is_err());
        assert!(watchdog_interval(Some("soon"), None, 7).is_err());
        assert!(watchdog_interval(Some("1000"), Some("x"), 7).is_err());
    }

    #[test]
    fn messages_reach_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::open(path.as_os_str(), None).unwrap();
        n.ready("listening on 127.0.0.1:9810\nsecond line");
        n.reloading();
        n.watchdog();
        n.stopping();
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        for _ in 0..4 {
            let len = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8(buf[..len].to_vec()).unwrap());
        }
        assert_eq!(
            got[0],
            "READY=1\nSTATUS=listening on 127.0.0.1:9810 second line"
        );
        let reload: Vec<&str> = got[1].lines().collect();
        assert_eq!(reload[0], "RELOADING=1");
        let usec: u64 = reload[2]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec > 0);
        assert_eq!(got[2], "WATCHDOG=1");
        assert_eq!(got[3], "STOPPING=1\nSTATUS=stopping");
    }
}
