//! `celeriac health`: asks a process served with `--http` whether it is ready (or live) and
//! exits non-zero when not, for a container's HEALTHCHECK. Also how the worker and beat
//! commands start their HTTP side.

use crate::support::{CliError, CliResult};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub(crate) async fn run(addr: SocketAddr, deep: bool, live: bool, timeout: Duration) -> CliResult {
    let path = match (live, deep) {
        (true, _) => "/livez",
        (false, true) => "/healthz?deep=1",
        (false, false) => "/readyz",
    };
    let (code, body) = tokio::time::timeout(timeout, get(addr, path))
        .await
        .map_err(|_| {
            CliError(format!(
                "http://{addr}{path} did not answer within {timeout:?}"
            ))
        })?
        .map_err(|e| {
            CliError(format!(
                "cannot ask http://{addr}{path}: {e} (is the process running with --http {addr}?)"
            ))
        })?;
    let text = match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or(body),
        Err(_) => body,
    };
    println!("{text}");
    if code == 200 {
        Ok(())
    } else {
        Err(CliError(format!(
            "not {}: http://{addr}{path} answered {code}",
            if live { "live" } else { "ready" }
        )))
    }
}

/// A GET over HTTP/1.1 on a fresh connection: the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    let reply = String::from_utf8_lossy(&reply);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = reply.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

/// The body of a chunked answer.
fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Serves the HTTP side of a worker or beat on `addr` until `stop`; an address that cannot be
/// bound fails the command at start.
pub(crate) async fn serve(
    http: celeriac_web::Http,
    addr: SocketAddr,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| CliError(format!("--http {addr}: cannot listen there: {e}")))?;
    eprintln!("serving /metrics, /livez, /readyz and /healthz on http://{addr}");
    Ok(tokio::spawn(async move {
        if let Err(e) = http.serve_on(listener, stop).await {
            eprintln!("error: the HTTP server stopped: {e}");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::unchunk;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            unchunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
        assert_eq!(unchunk(""), "");
    }
}
