//! The real binary speaks systemd's notify protocol to a real datagram
//! socket passed as `NOTIFY_SOCKET`, as systemd does for `Type=notify`:
//! READY=1 only once the port is bound, WATCHDOG=1 at half of
//! `WATCHDOG_USEC`, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around
//! every SIGHUP (a failed reload included), STOPPING=1 on SIGTERM.

use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use steward_tests::StewardAgent;

/// The receiving end systemd would hold.
struct NotifySocket {
    socket: UnixDatagram,
}

impl NotifySocket {
    fn bind_path(path: &std::path::Path) -> Self {
        Self::from(UnixDatagram::bind(path).unwrap())
    }

    fn bind_abstract(name: &str) -> Self {
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        Self::from(UnixDatagram::bind_addr(&addr).unwrap())
    }

    fn from(socket: UnixDatagram) -> Self {
        NotifySocket { socket }
    }

    /// The next datagram within `timeout`, if any.
    fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 notification")),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }

    /// The next datagram that is not a watchdog ping, waiting up to
    /// `timeout`; pings seen meanwhile are counted in `pings`.
    fn next_state(&self, timeout: Duration, pings: &mut usize, agent: &StewardAgent) -> String {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv(left) {
                Some(m) if m == "WATCHDOG=1" => *pings += 1,
                Some(m) => return m,
                None => break,
            }
        }
        panic!("no notification within {timeout:?}; log:\n{}", agent.log())
    }
}

fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec).unwrap() * 1_000_000 + u64::try_from(t.tv_nsec).unwrap() / 1_000
}

fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn notify_socket_gets_ready_after_bind_watchdog_reload_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let systemd = NotifySocket::bind_path(&path);
    // WatchdogSec=0.4s: a ping every 200 ms.
    let mut agent = StewardAgent::spawn_with_env(
        "",
        "",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .unwrap();

    let mut pings = 0;
    let ready = systemd.next_state(Duration::from_secs(60), &mut pings, &agent);
    // Checked right after READY=1 arrived: the port must already accept.
    let bound = TcpStream::connect(("127.0.0.1", agent.port));
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready}");
    assert!(
        bound.is_ok(),
        "READY=1 came before the listener was bound: {bound:?}"
    );
    assert_eq!(
        field(&ready, "STATUS"),
        Some(format!("listening on 127.0.0.1:{}", agent.port).as_str()),
        "{ready}"
    );

    // Pings from the main loop at about half of WATCHDOG_USEC: about 10 in
    // 2 s (the bounds leave room for a loaded machine, and catch a busy
    // loop or a missing timer).
    pings = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2000) {
        match systemd.recv(Duration::from_millis(2000)) {
            Some(m) => {
                assert_eq!(m, "WATCHDOG=1", "unexpected notification");
                pings += 1;
            }
            None => break,
        }
    }
    assert!(
        (4..=15).contains(&pings),
        "{pings} watchdog pings in 2 s at a 200 ms interval; log:\n{}",
        agent.log()
    );

    // A good reload: RELOADING=1 stamped with CLOCK_MONOTONIC, then READY=1.
    let before = monotonic_usec();
    agent.guard.signal(libc::SIGHUP);
    let reloading = systemd.next_state(Duration::from_secs(30), &mut pings, &agent);
    let after = monotonic_usec();
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading}");
    let stamp: u64 = field(&reloading, "MONOTONIC_USEC")
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&stamp),
        "MONOTONIC_USEC={stamp} outside [{before}, {after}]"
    );
    let ready = systemd.next_state(Duration::from_secs(30), &mut pings, &agent);
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready}");
    assert!(agent.log().contains("configuration reloaded"));

    // A failed reload still ends the reload (systemd would otherwise wait
    // for READY=1 until its timeout), and says so in STATUS.
    let good = std::fs::read_to_string(&agent.config_path).unwrap();
    std::fs::write(&agent.config_path, format!("{good}\n[broken\n")).unwrap();
    agent.guard.signal(libc::SIGHUP);
    let reloading = systemd.next_state(Duration::from_secs(30), &mut pings, &agent);
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading}");
    let ready = systemd.next_state(Duration::from_secs(30), &mut pings, &agent);
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready}");
    assert!(
        field(&ready, "STATUS").is_some_and(|s| s.contains("reload failed")),
        "{ready}"
    );

    // Pings go on after reloads.
    pings = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while pings < 2 && Instant::now() < deadline {
        if systemd.recv(Duration::from_millis(500)).as_deref() == Some("WATCHDOG=1") {
            pings += 1;
        }
    }
    assert_eq!(pings, 2, "no watchdog pings after the reloads");

    agent.guard.signal(libc::SIGTERM);
    let stopping = systemd.next_state(Duration::from_secs(30), &mut pings, &agent);
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping}");
    let status = agent.guard.stop(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "graceful stop exits 0: {status:?}");
}

#[test]
fn abstract_notify_socket_and_no_watchdog_without_watchdog_usec() {
    // systemd passes "@/org/freedesktop/systemd1/notify/..." names.
    let name = format!("/steward-test/notify/{}", std::process::id());
    let systemd = NotifySocket::bind_abstract(&name);
    let mut agent =
        StewardAgent::spawn_with_env("", "", &[("NOTIFY_SOCKET", &format!("@{name}"))]).unwrap();
    let mut pings = 0;
    let ready = systemd.next_state(Duration::from_secs(60), &mut pings, &agent);
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready}");
    // No WATCHDOG_USEC: systemd did not ask for pings, none are sent.
    assert_eq!(systemd.recv(Duration::from_millis(800)), None);
    agent.guard.signal(libc::SIGTERM);
    let stopping = systemd.next_state(Duration::from_secs(30), &mut pings, &agent);
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping}");
    assert_eq!(pings, 0);
    assert!(agent.guard.stop(Duration::from_secs(15)).unwrap().success());
}

#[test]
fn a_bad_notify_socket_is_reported_and_the_agent_still_runs() {
    let agent = StewardAgent::start_with_env("", "", &[("NOTIFY_SOCKET", "not/a/socket")]).unwrap();
    assert!(
        agent
            .log()
            .contains("NOTIFY_SOCKET=\"not/a/socket\" is neither an absolute path"),
        "{}",
        agent.log()
    );
}
