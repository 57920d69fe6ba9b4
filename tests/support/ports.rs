//! Loopback addresses for strangler processes the tests start as binaries.
//!
//! A child is never told a port found in advance (binding port 0 and
//! letting it go hands the port back to the kernel, which may give it to
//! any other socket, in this process or not, before the child binds it):
//! it listens on port 0 and logs the addresses it got, and the test reads
//! them from its `--log-format json` stderr.

use std::net::SocketAddr;

/// The proxy and admin addresses of a `strangler --log-format json run`,
/// from its "strangler is serving" line, once it has logged it (it logs it
/// when it is ready).
pub fn serving(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    log.lines().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        let fields = &entry["fields"];
        if fields["message"] != "strangler is serving" {
            return None;
        }
        Some((
            fields["proxy"].as_str()?.parse().ok()?,
            fields["admin"].as_str()?.parse().ok()?,
        ))
    })
}

/// A loopback address that refuses connections for as long as the returned
/// socket lives: the socket holds the port (no other socket can take it)
/// but never listens.
pub fn refusing() -> (SocketAddr, socket2::Socket) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("a loopback address");
    socket
        .bind(&any_port.into())
        .expect("the loopback interface accepts a bind to port 0");
    let addr = socket
        .local_addr()
        .expect("a bound socket has an address")
        .as_socket()
        .expect("an IP address");
    (addr, socket)
}
