//! The sockets of one node: the accept loop and one task per client connection that reads
//! frames, dispatches them to the info or record handlers and writes the answers back, in order
//! (the protocol is request/response per connection). The fault switches that act on the
//! transport live here: refused connections, closed connections and added latency. A connection
//! never outlives its server: dropping the accept task aborts them all.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::aerospike::batch;
use crate::aerospike::execute::execute;
use crate::aerospike::info;
use crate::aerospike::message::{INFO1_BATCH, encode_reply, parse_request};
use crate::aerospike::message::{Reply, ResultCode};
use crate::aerospike::node::Node;
use crate::aerospike::proto::{
    self, FrameError, TYPE_ADMIN, TYPE_COMPRESSED, TYPE_INFO, TYPE_MESSAGE, push_frame,
};

/// Accepts connections until the task is aborted.
pub(crate) async fn accept_loop(listener: TcpListener, node: Arc<Node>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if node.faults().refuse_connections {
                        tracing::debug!(node = %node.identity.name, %peer, "connection refused by switch");
                        drop(stream);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    // Subscribe before spawning, so a close ordered right after the accept
                    // still reaches this connection.
                    connections.spawn(serve_connection(stream, node.clone(), node.epoch()));
                }
                Err(error) => {
                    tracing::warn!(node = %node.identity.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one client connection until it closes, misbehaves or the node closes it.
async fn serve_connection(stream: TcpStream, node: Arc<Node>, mut epoch: watch::Receiver<u64>) {
    let (mut reader, mut writer) = stream.into_split();
    loop {
        let frame = tokio::select! {
            biased;
            _ = epoch.changed() => return,
            frame = proto::read_frame(&mut reader) => frame,
        };
        // A frame that arrived after the switch was flipped must not be answered: once
        // `close_connections` returns, no command gets through.
        if epoch.has_changed().unwrap_or(true) {
            return;
        }
        let frame = match frame {
            Ok(frame) => frame,
            Err(FrameError::Closed) => return,
            Err(error) => {
                tracing::debug!(node = %node.identity.name, %error, "closing connection");
                return;
            }
        };
        let Some((answer, delay)) = handle(&node, frame.kind, &frame.body) else {
            return;
        };
        let send = async {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            writer.write_all(&answer).await
        };
        let sent = tokio::select! {
            biased;
            _ = epoch.changed() => return,
            sent = send => sent,
        };
        if let Err(error) = sent {
            tracing::debug!(node = %node.identity.name, %error, "client went away");
            return;
        }
    }
}

/// The bytes to send back for one frame and how long to wait first; `None` closes the connection.
fn handle(node: &Node, kind: u8, body: &[u8]) -> Option<(Vec<u8>, Duration)> {
    let faults = node.faults();
    match kind {
        TYPE_INFO => {
            let text = info::answer_request(node, body);
            let mut out = Vec::with_capacity(text.len() + 8);
            push_frame(&mut out, TYPE_INFO, text.as_bytes());
            Some((out, faults.info_delay))
        }
        TYPE_MESSAGE => Some((record_command(node, body), faults.response_delay)),
        TYPE_COMPRESSED => {
            // Request compression is not implemented; say so the way the server says it.
            Some((
                batch::error_answer(ResultCode::UnsupportedFeature),
                faults.response_delay,
            ))
        }
        TYPE_ADMIN => {
            tracing::warn!(node = %node.identity.name, "security command on a server without security");
            None
        }
        other => {
            tracing::warn!(node = %node.identity.name, kind = other, "unknown message type");
            None
        }
    }
}

/// Answers one AS_MSG: a batch or a single-record command.
fn record_command(node: &Node, body: &[u8]) -> Vec<u8> {
    let request = match parse_request(body) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(node = %node.identity.name, %error, "malformed record command");
            return batch::error_answer(ResultCode::ParameterError);
        }
    };
    if request.header.info1 & INFO1_BATCH != 0 || request.batch.is_some() {
        return batch::answer(node, &request);
    }
    let reply: Reply = execute(node, &request);
    let mut message = Vec::new();
    encode_reply(&mut message, &reply, 0, 0);
    let mut out = Vec::with_capacity(message.len() + 8);
    push_frame(&mut out, TYPE_MESSAGE, &message);
    out
}
