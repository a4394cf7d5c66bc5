//! RESP2, the bytes Redis speaks, through `redis-protocol` (a maintained RESP codec; no
//! hand-written parser): the commands the web tier sends, reading replies off a connection's
//! bytes, and [`SimRedis`], the simulator's stand-in for `redis-server`.

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode;
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};
use retrace_sim::{ConnId, Service};
use std::collections::BTreeMap;

/// Bytes buffered for one connection before a frame must have ended: more is garbage (a
/// reply of the web tier's commands is a short value).
pub const PENDING_BYTES_MAX: usize = 1024 * 1024;

/// A frame as bytes.
pub fn to_bytes(frame: &OwnedFrame) -> Vec<u8> {
    let mut buf = vec![0u8; frame.encode_len(false)];
    // The buffer is the frame's encoded length, so encoding into it cannot run short.
    let n = encode(&mut buf, frame, false).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// A command as Redis reads it: an array of bulk strings.
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    to_bytes(&OwnedFrame::Array(
        args.iter()
            .map(|a| OwnedFrame::BulkString(a.to_vec()))
            .collect(),
    ))
}

/// Takes the first whole frame off the front of `pending`: `Ok(None)` until one has
/// arrived, `Err` when the bytes are not RESP (or too many arrived without ending a frame).
pub fn take_frame(pending: &mut Vec<u8>) -> Result<Option<OwnedFrame>, String> {
    match decode(pending) {
        Ok(Some((frame, used))) => {
            pending.drain(..used);
            Ok(Some(frame))
        }
        Ok(None) if pending.len() > PENDING_BYTES_MAX => Err(format!(
            "{} bytes without a whole RESP frame",
            pending.len()
        )),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("not RESP: {e}")),
    }
}

/// At most this many frames [`show`] spells out; more are counted.
const SHOWN_FRAMES_MAX: usize = 8;

/// RESP bytes as `redis-cli` shows them, frames separated by `; ` — a command as its words
/// (`SET k1 "1:v7"`), a reply as `OK`, `"1:v7"`, `(nil)`, `(integer) 1`, `(error) …`.
/// `None` when the bytes do not start with a RESP frame (they are shown as text or hex).
pub fn show(bytes: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    let mut at = 0;
    let mut frames = 0;
    while at < bytes.len() {
        match decode(&bytes[at..]) {
            Ok(Some((frame, used))) => {
                if frames < SHOWN_FRAMES_MAX {
                    parts.push(show_frame(&frame));
                }
                frames += 1;
                at += used;
            }
            Ok(None) if frames > 0 => {
                parts.push(format!("+ {} bytes of a frame", bytes.len() - at));
                break;
            }
            _ if frames == 0 => return None,
            _ => {
                parts.push(format!("+ {} bytes that are not RESP", bytes.len() - at));
                break;
            }
        }
    }
    if frames > SHOWN_FRAMES_MAX {
        parts.push(format!("… {} frames in all", frames));
    }
    Some(parts.join("; "))
}

fn word(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic()) => {
            text.to_string()
        }
        _ => format!("{:?}", String::from_utf8_lossy(bytes)),
    }
}

fn show_frame(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::Array(parts) => parts
            .iter()
            .map(|p| match p {
                OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => word(b),
                other => show_frame(other),
            })
            .collect::<Vec<_>>()
            .join(" "),
        OwnedFrame::BulkString(b) => format!("{:?}", String::from_utf8_lossy(b)),
        OwnedFrame::SimpleString(b) => String::from_utf8_lossy(b).into_owned(),
        OwnedFrame::Integer(n) => format!("(integer) {n}"),
        OwnedFrame::Error(e) => format!("(error) {e}"),
        OwnedFrame::Null => "(nil)".to_string(),
    }
}

/// What the simulator plays for `redis-server`: `GET`, `SET`, `DEL`, `PING` and `FLUSHALL`
/// answered as Redis answers them, over data that a crash of the service loses (the model
/// builds it afresh). Commands split over writes, or several in one, are framed per
/// connection, as Redis frames them.
#[derive(Default)]
pub struct SimRedis {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    pending: BTreeMap<ConnId, Vec<u8>>,
}

impl SimRedis {
    fn execute(&mut self, frame: OwnedFrame) -> OwnedFrame {
        let OwnedFrame::Array(parts) = frame else {
            return OwnedFrame::Error("ERR Protocol error: expected an array".into());
        };
        let args: Vec<Vec<u8>> = parts
            .into_iter()
            .filter_map(|p| match p {
                OwnedFrame::BulkString(b) | OwnedFrame::SimpleString(b) => Some(b),
                _ => None,
            })
            .collect();
        let Some(name) = args.first() else {
            return OwnedFrame::Error("ERR empty command".into());
        };
        let wrong_args = || {
            OwnedFrame::Error(format!(
                "ERR wrong number of arguments for '{}' command",
                String::from_utf8_lossy(name).to_lowercase()
            ))
        };
        match (name.to_ascii_uppercase().as_slice(), &args[1..]) {
            (b"PING", []) => OwnedFrame::SimpleString(b"PONG".to_vec()),
            (b"GET", [key]) => self
                .data
                .get(key)
                .map_or(OwnedFrame::Null, |v| OwnedFrame::BulkString(v.clone())),
            (b"SET", [key, value]) => {
                self.data.insert(key.clone(), value.clone());
                OwnedFrame::SimpleString(b"OK".to_vec())
            }
            (b"DEL", keys) if !keys.is_empty() => {
                let gone = keys
                    .iter()
                    .filter(|k| self.data.remove(*k).is_some())
                    .count();
                OwnedFrame::Integer(gone as i64)
            }
            (b"FLUSHALL", []) => {
                self.data.clear();
                OwnedFrame::SimpleString(b"OK".to_vec())
            }
            (b"PING" | b"GET" | b"SET" | b"DEL" | b"FLUSHALL", _) => wrong_args(),
            _ => OwnedFrame::Error(format!(
                "ERR unknown command '{}'",
                String::from_utf8_lossy(name)
            )),
        }
    }
}

impl Service for SimRedis {
    fn on_data(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<u8> {
        let mut pending = self.pending.remove(&conn).unwrap_or_default();
        pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            match take_frame(&mut pending) {
                Ok(Some(frame)) => {
                    let reply = self.execute(frame);
                    out.extend(to_bytes(&reply));
                }
                Ok(None) => break,
                Err(e) => {
                    // Redis answers a protocol error and drops what it could not read.
                    out.extend(to_bytes(&OwnedFrame::Error(format!(
                        "ERR Protocol error: {e}"
                    ))));
                    pending.clear();
                    break;
                }
            }
        }
        if !pending.is_empty() {
            self.pending.insert(conn, pending);
        }
        out
    }

    fn on_close(&mut self, conn: ConnId) {
        self.pending.remove(&conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_redis_answers_commands_split_and_joined_across_writes() {
        let mut redis = SimRedis::default();
        let c = ConnId(1);
        let mut joined = command(&[b"SET", b"k", b"1:v"]);
        joined.extend(command(&[b"GET", b"k"]));
        let (first, rest) = joined.split_at(7);
        assert_eq!(redis.on_data(c, first), b"");
        assert_eq!(redis.on_data(c, rest), b"+OK\r\n$3\r\n1:v\r\n");
        assert_eq!(redis.on_data(c, &command(&[b"DEL", b"k"])), b":1\r\n");
        assert_eq!(redis.on_data(c, &command(&[b"GET", b"k"])), b"$-1\r\n");
        assert!(redis
            .on_data(c, b"*1\r\n$x\r\n")
            .starts_with(b"-ERR Protocol error"));
    }

    #[test]
    fn bytes_show_as_redis_cli_shows_them() {
        let mut two = command(&[b"SET", b"k1", b"1:v 7"]);
        two.extend(command(&[b"GET", b"k1"]));
        assert_eq!(show(&two).unwrap(), r#"SET k1 "1:v 7"; GET k1"#);
        assert_eq!(
            show(b"+OK\r\n$-1\r\n:1\r\n-ERR no\r\n$2\r\nab\r\n$3\r\nx").unwrap(),
            r#"OK; (nil); (integer) 1; (error) ERR no; "ab"; + 5 bytes of a frame"#
        );
        assert_eq!(show(b"GET / HTTP/1.1\r\n"), None);
    }

    #[test]
    fn replies_are_taken_off_the_front_one_frame_at_a_time() {
        let mut pending = b"+OK\r\n:1\r\n$2\r\nab".to_vec();
        assert_eq!(
            take_frame(&mut pending),
            Ok(Some(OwnedFrame::SimpleString(b"OK".to_vec())))
        );
        assert_eq!(take_frame(&mut pending), Ok(Some(OwnedFrame::Integer(1))));
        assert_eq!(take_frame(&mut pending), Ok(None));
        pending.extend_from_slice(b"\r\n");
        assert_eq!(
            take_frame(&mut pending),
            Ok(Some(OwnedFrame::BulkString(b"ab".to_vec())))
        );
        assert!(take_frame(&mut b"garbage\r\n".to_vec()).is_err());
    }
}
