//! Loopback addresses and free ports. Every server of the environment binds 127.0.0.1 on a port
//! the kernel just handed out, so parallel runs and leftover processes never collide.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::{Error, Result};

/// Asks the kernel for a free TCP port on 127.0.0.1.
///
/// The port is released before it is returned, so there is a small window in which another
/// process could take it; servers that fail to bind are reported with their log.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::io("binding", "127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(Error::io("reading the address of", "127.0.0.1:0"))?
        .port();
    Ok(port)
}

/// Whether something accepts TCP connections at `addr` right now.
pub fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// `127.0.0.1:<port>`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
