//! A small RESP2 client: enough of the Redis protocol to send pipelined
//! commands and read their replies over TCP or a unix socket, with bounds on
//! everything read so a non-Redis peer cannot make it allocate or loop.

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

/// Largest bulk string accepted: `INFO ALL` is tens of kilobytes, so a
/// larger announcement is a peer that is not Redis (or a key checked by
/// mistake with GET-like semantics, which this client never sends).
const MAX_BULK_BYTES: usize = 8 * 1024 * 1024;
/// Largest array accepted (CONFIG GET of a few names is a handful).
const MAX_ARRAY_LEN: usize = 64 * 1024;
/// Longest status/error/integer line.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Nesting allowed in replies; none of the commands sent nests deeper.
const MAX_DEPTH: usize = 4;

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    /// An error reply (`-WRONGTYPE ...`, `-NOAUTH ...`): the connection
    /// stays usable.
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The integer of an `:N` reply.
    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// Text of a status or bulk reply.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Encodes one command as a RESP array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Sends `commands` in one write and reads one reply per command.
pub async fn pipeline<S>(stream: &mut S, commands: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, String>
where
    S: AsyncBufRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    for command in commands {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        encode(&mut buf, &args);
    }
    stream
        .write_all(&buf)
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    stream
        .flush()
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut replies = Vec::with_capacity(commands.len());
    for _ in commands {
        replies.push(read_reply(stream).await?);
    }
    Ok(replies)
}

/// Reads one reply.
pub async fn read_reply<S: AsyncBufRead + Unpin>(stream: &mut S) -> Result<Reply, String> {
    read_at_depth(stream, 0).await
}

async fn read_at_depth<S: AsyncBufRead + Unpin>(
    stream: &mut S,
    depth: usize,
) -> Result<Reply, String> {
    let line = read_line(stream).await?;
    let (kind, rest) = match line.split_first() {
        Some((k, r)) => (*k, r),
        None => return Err("the server sent an empty line; it does not speak RESP".into()),
    };
    let text = || String::from_utf8_lossy(rest).into_owned();
    match kind {
        b'+' => Ok(Reply::Status(text())),
        b'-' => Ok(Reply::Error(text())),
        b':' => parse_int(rest).map(Reply::Int),
        b'$' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Bulk(None));
            }
            let len = usize::try_from(len).map_err(|_| "bulk length out of range".to_string())?;
            if len > MAX_BULK_BYTES {
                return Err(format!(
                    "the server announced a {len}-byte reply, more than the {MAX_BULK_BYTES} accepted"
                ));
            }
            let mut data = vec![0; len + 2];
            stream
                .read_exact(&mut data)
                .await
                .map_err(|e| format!("cannot read a reply: {e}"))?;
            if !data.ends_with(b"\r\n") {
                return Err("a bulk reply does not end in CRLF; not RESP".into());
            }
            data.truncate(len);
            Ok(Reply::Bulk(Some(data)))
        }
        b'*' => {
            let len = parse_int(rest)?;
            if len < 0 {
                return Ok(Reply::Array(None));
            }
            if depth >= MAX_DEPTH {
                return Err("a reply nests deeper than any command sent allows".into());
            }
            let len = usize::try_from(len).map_err(|_| "array length out of range".to_string())?;
            if len > MAX_ARRAY_LEN {
                return Err(format!(
                    "the server announced {len} elements, more than the {MAX_ARRAY_LEN} accepted"
                ));
            }
            let mut items = Vec::with_capacity(len.min(64));
            for _ in 0..len {
                items.push(Box::pin(read_at_depth(stream, depth + 1)).await?);
            }
            Ok(Reply::Array(Some(items)))
        }
        other => Err(format!(
            "the server answered {}, not a RESP reply; is this port a Redis server?",
            excerpt(&[&[other][..], rest].concat())
        )),
    }
}

/// One CRLF-terminated line without the CRLF, at most [`MAX_LINE_BYTES`].
async fn read_line<S: AsyncBufRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    let n = (&mut *stream)
        .take(MAX_LINE_BYTES as u64 + 2)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("cannot read a reply: {e}"))?;
    if n == 0 {
        return Err("the server closed the connection".into());
    }
    if !line.ends_with(b"\r\n") {
        return Err(format!(
            "the server answered {}, not a RESP line; is this port a Redis server?",
            excerpt(&line)
        ));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn parse_int(raw: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{} is not a RESP integer", excerpt(raw)))
}

/// A short printable excerpt of untrusted bytes for messages.
fn excerpt(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(&raw[..raw.len().min(40)]).into_owned();
    format!("{text:?}")
}

/// Anything a connection can run over (TCP or unix socket).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<Reply, String> {
        let mut reader = tokio::io::BufReader::new(bytes);
        read_reply(&mut reader).await
    }

    #[tokio::test]
    async fn reads_every_reply_kind() {
        assert_eq!(parse(b"+OK\r\n").await.unwrap(), Reply::Status("OK".into()));
        assert_eq!(
            parse(b"-WRONGTYPE x\r\n").await.unwrap(),
            Reply::Error("WRONGTYPE x".into())
        );
        assert_eq!(parse(b":42\r\n").await.unwrap(), Reply::Int(42));
        assert_eq!(parse(b"$-1\r\n").await.unwrap(), Reply::Bulk(None));
        assert_eq!(
            parse(b"*2\r\n$3\r\nfoo\r\n:1\r\n").await.unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some(b"foo".to_vec())),
                Reply::Int(1)
            ]))
        );
    }

    #[tokio::test]
    async fn rejects_garbage_and_oversized_announcements() {
        for bad in [
            &b"SSH-2.0-OpenSSH_9.2\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\n",
            b"$999999999999\r\n",
            b"*999999999\r\n",
            b":12x\r\n",
            b"+no crlf",
            b"",
            b"$3\r\nfoobar",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(bad).await.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&mut out, &[b"LLEN", b"queues:default"]);
        assert_eq!(out, b"*2\r\n$4\r\nLLEN\r\n$14\r\nqueues:default\r\n");
    }
}
