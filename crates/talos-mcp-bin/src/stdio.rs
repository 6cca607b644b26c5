//! MCP over stdio with a bounded line length: a message longer than [`MAX_LINE`] is answered
//! with a JSON-RPC "invalid request" error (carrying its id when the start of the line names
//! one) instead of being dropped in silence, and the server keeps reading. Memory stays bounded:
//! lines are passed on as they arrive, never gathered whole.

use rmcp::RoleServer;
use rmcp::model::{ErrorData, RequestId, ServerJsonRpcMessage};
use rmcp::service::RxJsonRpcMessage;
use rmcp::transport::Transport;
use rmcp::transport::async_rw::{AsyncRwTransport, DEFAULT_MAX_LINE_LENGTH};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::sync::mpsc;

/// The longest message line accepted, newline included: 2 bytes below rmcp's own cap, so that a
/// truncated line and its terminator (see [`forward_lines`]) still reach rmcp's parser.
pub(crate) const MAX_LINE: usize = DEFAULT_MAX_LINE_LENGTH - 2;

/// How much of an over-long line is kept to look for its id.
const HEAD: usize = 64 * 1024;

/// The stdio transport of `serve`.
pub(crate) fn transport() -> BoundedLines<tokio::io::DuplexStream, tokio::io::Stdout> {
    BoundedLines::new(tokio::io::stdin(), tokio::io::stdout(), MAX_LINE)
}

/// rmcp's newline-delimited JSON transport behind a filter that answers over-long lines.
pub(crate) struct BoundedLines<R: AsyncRead, W: AsyncWrite> {
    inner: AsyncRwTransport<RoleServer, R, W>,
    /// The ids (if found) of over-long requests, in order.
    oversized: mpsc::Receiver<Option<RequestId>>,
    limit: usize,
}

impl<R: AsyncRead, W: AsyncWrite> std::fmt::Debug for BoundedLines<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundedLines")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl<W> BoundedLines<tokio::io::DuplexStream, W>
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    pub(crate) fn new<I>(input: I, output: W, limit: usize) -> Self
    where
        I: AsyncRead + Send + Unpin + 'static,
    {
        let (to_rmcp, from_filter) = tokio::io::duplex(64 * 1024);
        let (report, oversized) = mpsc::channel(16);
        tokio::spawn(forward_lines(input, to_rmcp, report, limit));
        Self {
            inner: AsyncRwTransport::new_server(from_filter, output),
            oversized,
            limit,
        }
    }
}

impl<R, W> Transport<RoleServer> for BoundedLines<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            tokio::select! {
                biased;
                Some(id) = self.oversized.recv() => {
                    tracing::warn!(limit = self.limit, "refused a message longer than the line limit");
                    let error = ErrorData::invalid_request(
                        format!(
                            "message longer than {} bytes: not read, nothing was done; send smaller arguments",
                            self.limit
                        ),
                        None,
                    );
                    if self.inner.send(ServerJsonRpcMessage::error(error, id)).await.is_err() {
                        return None;
                    }
                }
                message = self.inner.receive() => return message,
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.inner.close().await
    }
}

/// Copies `input` to `output` line by line as bytes arrive. A line longer than `limit` is cut:
/// what was passed on is ended with a byte no JSON text contains (so rmcp's parser ignores it),
/// the rest is skipped up to its newline, and its id, if the start of the line has one, is
/// reported on `oversized`.
async fn forward_lines<I, O>(
    input: I,
    mut output: O,
    oversized: mpsc::Sender<Option<RequestId>>,
    limit: usize,
) where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut input = BufReader::with_capacity(64 * 1024, input);
    // Bytes of the current line passed on so far, and its first HEAD bytes.
    let mut passed = 0usize;
    let mut head = Vec::new();
    let mut skipping = false;
    loop {
        let chunk = match input.fill_buf().await {
            Ok([]) | Err(_) => return,
            Ok(chunk) => chunk,
        };
        let newline = chunk.iter().position(|b| *b == b'\n');
        let take = newline.map_or(chunk.len(), |i| i + 1);
        let part = &chunk[..take];
        if skipping {
            skipping = newline.is_none();
        } else if passed.saturating_add(take) > limit {
            if passed > 0 && output.write_all(b"\x01\n").await.is_err() {
                return;
            }
            head.extend_from_slice(&part[..part.len().min(HEAD.saturating_sub(head.len()))]);
            if oversized.send(request_id(&head)).await.is_err() {
                return;
            }
            skipping = newline.is_none();
            passed = 0;
            head.clear();
        } else {
            if output.write_all(part).await.is_err() {
                return;
            }
            if newline.is_some() {
                passed = 0;
                head.clear();
            } else {
                passed += take;
                head.extend_from_slice(&part[..part.len().min(HEAD.saturating_sub(head.len()))]);
            }
        }
        input.consume(take);
    }
}

/// The top-level `id` of a JSON object of which `head` is the start, if it comes early enough.
fn request_id(head: &[u8]) -> Option<RequestId> {
    use serde::Deserializer as _;
    use serde::de::{IgnoredAny, MapAccess, Visitor};
    struct FindId<'a>(&'a mut Option<serde_json::Value>);
    impl<'de> Visitor<'de> for FindId<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON-RPC message")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "id" {
                    *self.0 = Some(map.next_value()?);
                    return Ok(());
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let mut found = None;
    // The head is cut short, so parsing ends in an error; the id, if seen, is kept.
    let _ = serde_json::Deserializer::from_slice(head).deserialize_map(FindId(&mut found));
    serde_json::from_value(found?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[test]
    fn ids_are_found_at_the_start_of_a_cut_line() {
        let id = |s: &str| request_id(s.as_bytes()).map(|i| serde_json::to_value(i).unwrap());
        assert_eq!(
            id(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"x":"aaa"#),
            Some(serde_json::json!(7))
        );
        assert_eq!(
            id(r#"{"method":"x","id":"abc","params":[1,2"#),
            Some(serde_json::json!("abc"))
        );
        assert_eq!(id(r#"{"params":{"id":3},"x":"#), None, "only top level");
        assert_eq!(id(r#"{"params":"aaaa"#), None);
        assert_eq!(id("[1,2,"), None);
        assert_eq!(id("\u{1}"), None);
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_reported_short_ones_pass() {
        let input = b"{\"id\":1}\n{\"id\":2,\"x\":\"0123456789\"}\n{\"id\":3}\n".to_vec();
        let (mut out_read, out_write) = tokio::io::duplex(1024);
        let (tx, mut rx) = mpsc::channel(4);
        forward_lines(&input[..], out_write, tx, 20).await;
        let mut passed = Vec::new();
        out_read.read_to_end(&mut passed).await.unwrap();
        let passed = String::from_utf8(passed).unwrap();
        // The long line was cut before any of it was passed on (one 64 KiB read holds all).
        assert_eq!(passed, "{\"id\":1}\n{\"id\":3}\n");
        let reported = rx.recv().await.unwrap().unwrap();
        assert_eq!(serde_json::to_value(reported).unwrap(), 2);
        assert!(rx.recv().await.is_none());
    }
}
