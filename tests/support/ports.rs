//! Loopback addresses for strangler processes the tests start as binaries,
//! which must be told their ports in advance.
//!
//! A port is found by binding port 0 and letting the listener go, so the
//! kernel may hand the same port out again before the child has bound it.
//! Within this test process no port is handed out twice; a child that
//! still finds its port taken (by some other socket) is restarted on fresh
//! ports by its caller (see `address_in_use`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A free loopback address that no other caller in this process got.
pub fn reserve() -> SocketAddr {
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("the loopback interface accepts a bind to port 0");
        if handed_out.insert(addr.port()) {
            return addr;
        }
    }
}

/// Whether a strangler's stderr says it lost a reserved port to another
/// socket (the only start failure worth a retry).
pub fn address_in_use(stderr: &str) -> bool {
    stderr.contains("Address already in use")
}
