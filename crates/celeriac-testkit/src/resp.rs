//! A tiny RESP2 client over plain TCP (or a Unix socket): enough to PING, AUTH, SET/GET in
//! tests and to run the testkit's admin commands (`CLUSTER ...`, `SENTINEL ...`, `INFO`). It
//! has no timeouts of its own; wrap calls in [`tokio::time::timeout`] where a server may hang
//! (a paused one).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::ReadBuf;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};

use crate::error::{Error, Result};

/// A RESP2 reply. Error replies are not values: [`Connection::command`] returns them as
/// [`Error::Server`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A null bulk string or null array.
    Nil,
    /// A simple string (`+OK`).
    Simple(String),
    /// An integer (`:1`).
    Integer(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
}

impl Value {
    /// The reply as text, for simple and bulk strings (bulk bytes are decoded lossily).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Simple(s) => Some(s.clone()),
            Value::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The reply as an integer, for integer replies and strings holding one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            other => other.as_text()?.parse().ok(),
        }
    }

    /// The elements of an array reply.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }
}

/// One plain-text connection to a Redis server, over TCP or a Unix socket.
#[derive(Debug)]
pub struct Connection {
    stream: BufReader<Stream>,
}

/// The transport under a [`Connection`].
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Connection {
    /// Connects to `host:port`. Does not authenticate: see
    /// [`RedisServer::connect`](crate::RedisServer::connect) for that.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the TCP connection is refused.
    pub async fn connect(host: &str, port: u16) -> Result<Connection> {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| Error::io(format!("connecting to {host}:{port}"), e))?;
        // Tests send one small command at a time; do not let Nagle delay it.
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io("setting TCP_NODELAY", e))?;
        Ok(Connection {
            stream: BufReader::new(Stream::Tcp(stream)),
        })
    }

    /// Connects to the Unix socket at `path` (`unixsocket` of a server). Does not
    /// authenticate.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when nothing listens there.
    pub async fn connect_unix(path: &Path) -> Result<Connection> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| Error::io(format!("connecting to {}", path.display()), e))?;
        Ok(Connection {
            stream: BufReader::new(Stream::Unix(stream)),
        })
    }

    /// Sends one command (each argument is one bulk string) and reads its reply.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] for an error reply, [`Error::Protocol`] or [`Error::Io`] when the
    /// connection breaks.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a command cancelled half-way leaves the connection out of step;
    /// drop the connection after a timeout.
    pub async fn command<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Result<Value> {
        let mut frame = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            let arg = arg.as_ref();
            frame.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            frame.extend_from_slice(arg);
            frame.extend_from_slice(b"\r\n");
        }
        self.stream
            .get_mut()
            .write_all(&frame)
            .await
            .map_err(|e| Error::io("sending a command", e))?;
        self.read_value().await
    }

    // Recursive (arrays nest), so the future is boxed.
    fn read_value(&mut self) -> Pin<Box<dyn Future<Output = Result<Value>> + Send + '_>> {
        Box::pin(async move {
            let line = self.read_line().await?;
            let (kind, rest) = line.split_at(1);
            let number = || {
                rest.parse::<i64>()
                    .map_err(|_| Error::Protocol(format!("bad length or integer in {line:?}")))
            };
            match kind {
                "+" => Ok(Value::Simple(rest.to_owned())),
                "-" => Err(Error::Server(rest.to_owned())),
                ":" => Ok(Value::Integer(number()?)),
                "$" => {
                    let Ok(len) = usize::try_from(number()?) else {
                        return Ok(Value::Nil);
                    };
                    let mut data = vec![0; len + 2];
                    self.stream
                        .read_exact(&mut data)
                        .await
                        .map_err(|e| Error::io("reading a bulk string", e))?;
                    data.truncate(len);
                    Ok(Value::Bulk(data))
                }
                "*" => {
                    let Ok(len) = usize::try_from(number()?) else {
                        return Ok(Value::Nil);
                    };
                    let mut items = Vec::with_capacity(len);
                    for _ in 0..len {
                        items.push(self.read_value().await?);
                    }
                    Ok(Value::Array(items))
                }
                _ => Err(Error::Protocol(format!("unexpected reply line {line:?}"))),
            }
        })
    }

    async fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self
            .stream
            .read_line(&mut line)
            .await
            .map_err(|e| Error::io("reading a reply", e))?;
        if n == 0 {
            return Err(Error::Protocol("connection closed by the server".into()));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Err(Error::Protocol("empty reply line".into()));
        }
        Ok(line.to_owned())
    }
}
