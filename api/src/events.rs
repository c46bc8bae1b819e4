//! `GET /api/v1/events`: the organisation's instance changes as server-sent
//! events, read as a stream of [`StreamEvent`]s.

use chrono::{DateTime, Utc};
use domain::State;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ClientError;

/// One instance's change, as the event stream's `instance` events carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceEvent {
    pub id: Uuid,
    pub name: String,
    pub state: State,
    pub owner: String,
    pub generation: i64,
    pub observed_generation: i64,
    pub error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// What the stream says.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The stream is open (sent first).
    Hello,
    Instance(InstanceEvent),
    /// Changes were missed (the client was too slow): re-read what matters.
    Resync,
    /// An event of a kind this client does not know.
    Other(String),
}

/// An open event stream.
pub struct EventStream {
    response: reqwest::Response,
    endpoint: String,
    parser: Parser,
}

impl EventStream {
    pub(crate) fn new(response: reqwest::Response, endpoint: String) -> EventStream {
        EventStream {
            response,
            endpoint,
            parser: Parser::default(),
        }
    }

    /// The next event; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<StreamEvent>, ClientError> {
        loop {
            if let Some(event) = self.parser.next_event() {
                match event {
                    Ok(e) => return Ok(Some(e)),
                    Err(detail) => {
                        return Err(ClientError::Protocol {
                            endpoint: self.endpoint.clone(),
                            detail,
                        })
                    }
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .map_err(|source| ClientError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    source,
                })?;
            match chunk {
                Some(bytes) => self.parser.push(&bytes),
                None => return Ok(None),
            }
        }
    }
}

/// Splits `text/event-stream` bytes into events (the WHATWG rules that
/// matter here: `\n`, `\r\n` or `\r` line ends, `:` comments, several
/// `data:` lines joined by newlines, an event per blank line).
#[derive(Default)]
pub(crate) struct Parser {
    buffer: Vec<u8>,
}

/// Pending bytes before a stream is considered broken (no event ends).
const MAX_PENDING: usize = 1 << 20;

impl Parser {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete event in the buffer, if one is.
    pub(crate) fn next_event(&mut self) -> Option<Result<StreamEvent, String>> {
        loop {
            let Some((end, skip)) = block_end(&self.buffer) else {
                if self.buffer.len() > MAX_PENDING {
                    self.buffer.clear();
                    return Some(Err("an event longer than 1 MiB".to_owned()));
                }
                return None;
            };
            let block: Vec<u8> = self.buffer.drain(..end + skip).take(end).collect();
            let text = String::from_utf8_lossy(&block)
                .replace("\r\n", "\n")
                .replace('\r', "\n");
            let mut kind: Option<String> = None;
            let mut data: Option<String> = None;
            for line in text.lines() {
                if line.is_empty() || line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => kind = Some(value.to_owned()),
                    "data" => match &mut data {
                        Some(d) => {
                            d.push('\n');
                            d.push_str(value);
                        }
                        None => data = Some(value.to_owned()),
                    },
                    _ => {}
                }
            }
            // A block of comments only (a keep-alive) is no event.
            let Some(data) = data else { continue };
            let kind = kind.unwrap_or_else(|| "message".to_owned());
            return Some(match kind.as_str() {
                "hello" => Ok(StreamEvent::Hello),
                "resync" => Ok(StreamEvent::Resync),
                "instance" => serde_json::from_str(&data)
                    .map(StreamEvent::Instance)
                    .map_err(|e| format!("an instance event that is not one ({e}): {data}")),
                _ => Ok(StreamEvent::Other(kind)),
            });
        }
    }
}

/// Where the first event block in `buf` ends, and the blank line's length.
fn block_end(buf: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < buf.len() {
        let line_end = match buf[i] {
            b'\n' => 1,
            b'\r' if buf.get(i + 1) == Some(&b'\n') => 2,
            b'\r' if i + 1 < buf.len() => 1,
            // A lone `\r` at the end: wait for what follows.
            b'\r' => return None,
            _ => {
                i += 1;
                continue;
            }
        };
        let next = i + line_end;
        match buf.get(next) {
            Some(b'\n') => return Some((i, line_end + 1)),
            Some(b'\r') if buf.get(next + 1) == Some(&b'\n') => return Some((i, line_end + 2)),
            Some(b'\r') if next + 1 < buf.len() => return Some((i, line_end + 1)),
            Some(b'\r') | None => return None,
            Some(_) => i = next,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANGE: &str = r#"{"id":"6f8c729b-32b5-4635-b07c-54d9e3b2a277","name":"orders","state":"Up","owner":"api","generation":2,"observedGeneration":2,"error":null,"updatedAt":"2026-01-02T03:04:05Z"}"#;

    #[test]
    fn events_are_read_whatever_the_chunks_and_line_ends() {
        let stream = format!(
            "event: hello\nretry: 1000\ndata: {{}}\n\n: keep-alive\n\nevent: instance\r\nid: 2026-01-02T03:04:05Z\r\ndata: {CHANGE}\r\n\r\nevent: resync\rdata: {{}}\r\revent: later\ndata: x\n\n"
        );
        for chunk in [1, 3, 7, stream.len()] {
            let mut parser = Parser::default();
            let mut events = Vec::new();
            for piece in stream.as_bytes().chunks(chunk) {
                parser.push(piece);
                while let Some(e) = parser.next_event() {
                    events.push(e.unwrap());
                }
            }
            assert_eq!(events.len(), 4, "chunks of {chunk}: {events:?}");
            assert_eq!(events[0], StreamEvent::Hello);
            let StreamEvent::Instance(change) = &events[1] else {
                panic!("{:?}", events[1]);
            };
            assert_eq!(change.state, State::Up);
            assert_eq!(change.observed_generation, 2);
            assert_eq!(events[2], StreamEvent::Resync);
            assert_eq!(events[3], StreamEvent::Other("later".into()));
        }
    }

    #[test]
    fn several_data_lines_are_one_value_and_a_bad_instance_is_an_error() {
        let mut parser = Parser::default();
        parser.push(b"event: other\ndata: a\ndata: b\n\nevent: instance\ndata: {}\n\n");
        assert_eq!(
            parser.next_event().unwrap().unwrap(),
            StreamEvent::Other("other".into())
        );
        assert!(parser.next_event().unwrap().is_err());
        assert!(parser.next_event().is_none());
    }
}
