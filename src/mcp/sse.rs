//! The client side of MCP's older HTTP+SSE transport (protocol revision 2024-11-05), which
//! servers that predate streamable HTTP still speak and rmcp no longer ships: the client opens
//! `GET {url}` as an event stream; the server's first event, `endpoint`, names the URL the
//! client posts its JSON-RPC messages to (one per request, answered `202`); the server's
//! messages come back as `message` events on the stream.
//!
//! [`connect`] makes an rmcp transport of it: a sink that posts, and a stream of the events'
//! messages, which ends when the event stream does (the server went away: rmcp sees the
//! transport closed, and the client starts it again at the next call).

use std::pin::Pin;
use std::time::Duration;

use futures::{Sink, Stream};
use reqwest::header::{HeaderMap, ACCEPT};
use rmcp::service::{RoleClient, RxJsonRpcMessage, TxJsonRpcMessage};
use voxloop_core::remote::EventStream;

/// Messages from the server.
pub type Incoming = Pin<Box<dyn Stream<Item = RxJsonRpcMessage<RoleClient>> + Send>>;
/// Messages to the server.
pub type Outgoing = Pin<Box<dyn Sink<TxJsonRpcMessage<RoleClient>, Error = std::io::Error> + Send>>;

/// Opens the event stream at `url` and waits (at most `timeout`) for the endpoint to post to.
pub async fn connect(
    url: &str,
    headers: HeaderMap,
    timeout: Duration,
) -> anyhow::Result<(Outgoing, Incoming)> {
    let client = reqwest::Client::builder().default_headers(headers).build()?;
    let base = reqwest::Url::parse(url)?;
    let response = tokio::time::timeout(
        timeout,
        client.get(base.clone()).header(ACCEPT, "text/event-stream").send(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("GET {url} timed out"))??;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!("GET {url} answered {status}");
    }
    let mut events = EventStream::new(response, None);
    let endpoint = tokio::time::timeout(timeout, async {
        while let Some(event) = events.next_event().await? {
            if event.event == "endpoint" {
                return Ok(Some(event.data));
            }
        }
        Ok::<_, voxloop_core::Error>(None)
    })
    .await
    .map_err(|_| anyhow::anyhow!("{url} sent no endpoint event in time"))??
    .ok_or_else(|| anyhow::anyhow!("{url} closed the stream before its endpoint event"))?;
    // The endpoint may be a path: it is relative to the stream's URL. Posting elsewhere than
    // that server would hand the session to whoever the event names.
    let endpoint = base.join(endpoint.trim())?;
    if endpoint.origin() != base.origin() {
        anyhow::bail!("{url} named an endpoint on another origin ({endpoint})");
    }

    let incoming = futures::stream::unfold(events, |mut events| async move {
        loop {
            match events.next_event().await {
                Ok(Some(event)) if event.event == "message" => {
                    match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&event.data) {
                        Ok(message) => return Some((message, events)),
                        Err(e) => tracing::warn!(error = %e, "an SSE message that is not JSON-RPC"),
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "the MCP event stream broke");
                    return None;
                }
            }
        }
    });
    let outgoing = futures::sink::unfold(
        (client, endpoint),
        |(client, endpoint), message: TxJsonRpcMessage<RoleClient>| async move {
            let response = client
                .post(endpoint.clone())
                .json(&message)
                .send()
                .await
                .map_err(std::io::Error::other)?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                return Err(std::io::Error::other(format!(
                    "POST {endpoint} answered {status}: {text}"
                )));
            }
            Ok((client, endpoint))
        },
    );
    Ok((Box::pin(outgoing), Box::pin(incoming)))
}
