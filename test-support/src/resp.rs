//! A tiny blocking RESP2 client: one command per connection, bounded by timeouts. Enough for
//! readiness probes and for drills that poke a server directly; services use `bb8-redis`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::error::SupportError;

/// The largest bulk string accepted (tests never need more).
const MAX_BULK: usize = 64 * 1024 * 1024;
/// The deepest array nesting accepted.
const MAX_DEPTH: usize = 16;
/// The most elements accepted in one array.
const MAX_ARRAY: usize = 1_000_000;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespValue {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:1`
    Integer(i64),
    /// `$n\r\n...`; `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n\r\n...`; `None` for the null array.
    Array(Option<Vec<RespValue>>),
}

impl RespValue {
    /// The reply as text, for simple and bulk strings.
    pub fn as_text(&self) -> Option<String> {
        match self {
            RespValue::Simple(s) => Some(s.clone()),
            RespValue::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// Whether the reply is the null bulk string or null array.
    pub fn is_nil(&self) -> bool {
        matches!(self, RespValue::Bulk(None) | RespValue::Array(None))
    }
}

/// Send one command to `addr` and read its reply. A `-ERR` reply is returned as
/// [`RespValue::Error`], not as an `Err`; connection and protocol failures are `Err`.
pub fn command(
    addr: SocketAddr,
    args: &[&str],
    timeout: Duration,
) -> Result<RespValue, SupportError> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| SupportError::io(format!("connect to redis at {addr}"), e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| SupportError::io("set redis socket timeouts", e))?;
    stream
        .write_all(&encode(args))
        .map_err(|e| SupportError::io(format!("send to redis at {addr}"), e))?;
    let mut reader = BufReader::new(stream);
    read_value(&mut reader, 0)
}

/// Encode a command as a RESP array of bulk strings.
pub fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Read one reply.
pub fn read_value<R: BufRead>(reader: &mut R, depth: usize) -> Result<RespValue, SupportError> {
    if depth > MAX_DEPTH {
        return Err(SupportError::Redis("reply nested too deeply".into()));
    }
    let line = read_line(reader)?;
    let (kind, rest) = line
        .split_at_checked(1)
        .ok_or_else(|| SupportError::Redis("empty reply line".into()))?;
    match kind {
        "+" => Ok(RespValue::Simple(rest.to_owned())),
        "-" => Ok(RespValue::Error(rest.to_owned())),
        ":" => rest
            .parse()
            .map(RespValue::Integer)
            .map_err(|_| SupportError::Redis(format!("bad integer reply {rest:?}"))),
        "$" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| SupportError::Redis(format!("bad bulk length {rest:?}")))?;
            if len < 0 {
                return Ok(RespValue::Bulk(None));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_BULK)
                .ok_or_else(|| SupportError::Redis(format!("bulk too large ({len})")))?;
            let mut buf = vec![0u8; len + 2];
            reader
                .read_exact(&mut buf)
                .map_err(|e| SupportError::io("read a redis bulk reply", e))?;
            if !buf.ends_with(b"\r\n") {
                return Err(SupportError::Redis("bulk reply not terminated".into()));
            }
            buf.truncate(len);
            Ok(RespValue::Bulk(Some(buf)))
        }
        "*" => {
            let len: i64 = rest
                .parse()
                .map_err(|_| SupportError::Redis(format!("bad array length {rest:?}")))?;
            if len < 0 {
                return Ok(RespValue::Array(None));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|l| *l <= MAX_ARRAY)
                .ok_or_else(|| SupportError::Redis(format!("array too large ({len})")))?;
            let mut items = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                items.push(read_value(reader, depth + 1)?);
            }
            Ok(RespValue::Array(Some(items)))
        }
        other => Err(SupportError::Redis(format!("unknown reply type {other:?}"))),
    }
}

fn read_line<R: BufRead>(reader: &mut R) -> Result<String, SupportError> {
    let mut line = Vec::new();
    // Bound the line so a hostile peer cannot grow it without limit.
    let n = reader
        .by_ref()
        .take(64 * 1024)
        .read_until(b'\n', &mut line)
        .map_err(|e| SupportError::io("read a redis reply", e))?;
    if n == 0 {
        return Err(SupportError::Redis(
            "connection closed before a reply".into(),
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(SupportError::Redis("reply line not terminated".into()));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| SupportError::Redis("reply line not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<RespValue, SupportError> {
        read_value(&mut BufReader::new(bytes), 0)
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(encode(&["GET", "k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn parses_replies() {
        assert_eq!(
            parse(b"+PONG\r\n").unwrap(),
            RespValue::Simple("PONG".into())
        );
        assert_eq!(
            parse(b"-ERR x\r\n").unwrap(),
            RespValue::Error("ERR x".into())
        );
        assert_eq!(parse(b":42\r\n").unwrap(), RespValue::Integer(42));
        assert_eq!(parse(b"$-1\r\n").unwrap(), RespValue::Bulk(None));
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n:1\r\n").unwrap(),
            RespValue::Array(Some(vec![
                RespValue::Bulk(Some(b"a".to_vec())),
                RespValue::Integer(1)
            ]))
        );
        assert!(parse(b"$5\r\nab\r\n").is_err());
        assert!(parse(b"?x\r\n").is_err());
        assert!(parse(b"").is_err());
    }
}
