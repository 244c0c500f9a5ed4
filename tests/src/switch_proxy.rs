//! A TCP proxy that can be switched off: while down its port refuses
//! connections (the listener is closed) and the connections it carried
//! are cut, as when a store or the network to it goes away; switched on
//! again it listens on the same port. For "S3 down" tests in front of
//! moto, whose data lives in memory and would not survive a restart.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
pub struct SwitchProxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl SwitchProxy {
    pub fn start(upstream: u16) -> anyhow::Result<Self> {
        let first = TcpListener::bind("127.0.0.1:0")?;
        let port = first.local_addr()?.port();
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, s, o) = (Arc::clone(&down), Arc::clone(&stop), Arc::clone(&open));
        std::thread::spawn(move || {
            let mut listener = Some(first);
            while !s.load(Ordering::Relaxed) {
                if d.load(Ordering::Relaxed) {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                if listener.is_none() {
                    listener = TcpListener::bind(("127.0.0.1", port)).ok();
                }
                let Some(l) = &listener else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = l.set_nonblocking(true);
                match l.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            continue;
                        };
                        if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                            if let Ok(mut g) = o.lock() {
                                g.push(c2);
                                g.push(s2);
                            }
                        }
                        pipe_both(client, server);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(SwitchProxy {
            port,
            down,
            stop,
            open,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Down: refuse new connections and cut the open ones. Up: listen
    /// again (give it a moment to bind).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
        if down {
            if let Ok(mut g) = self.open.lock() {
                for s in g.drain(..) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for SwitchProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe_both(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    std::thread::spawn(move || copy_then_close(a, b2));
    std::thread::spawn(move || copy_then_close(b, a2));
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}
