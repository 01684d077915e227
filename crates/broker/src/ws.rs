//! MQTT over WebSocket (MQTT 3.1.1 and 5.0, chapter 6): the client asks
//! for the `mqtt` subprotocol on the configured path, and binary frames
//! carry the MQTT byte stream, which may cross frame boundaries. The
//! connection code sees a plain byte stream.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How much of the MQTT stream may wait between the socket and the
/// connection in each direction.
const PIPE: usize = 16 * 1024;

/// Completes the WebSocket handshake on `stream` for `path`, then returns
/// the MQTT byte stream inside it; two tasks carry the bytes until either
/// side closes.
pub async fn accept<S>(stream: S, path: &str, max_packet: usize) -> Result<DuplexStream, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The handshake library's callback type: its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    let check = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        if request.uri().path() != path {
            return Err(refusal(StatusCode::NOT_FOUND, "no MQTT here"));
        }
        let offers_mqtt = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "mqtt");
        if !offers_mqtt {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                "the `mqtt` subprotocol is required",
            ));
        }
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    // A frame may not exceed what a packet may be (plus its framing).
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_packet + 16))
        .max_frame_size(Some(max_packet + 16));
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config))
        .await
        .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
    let (inside, outside) = tokio::io::duplex(PIPE);
    let (mut from_client, mut to_client) = tokio::io::split(inside);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        while let Some(frame) = source.next().await {
            match frame {
                Ok(Message::Binary(bytes)) => {
                    if to_client.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                // MQTT-6.0.0-1: anything but binary data closes the connection.
                Ok(Message::Text(_)) => {
                    tracing::info!("a text frame on an MQTT WebSocket; closing");
                    break;
                }
                Ok(Message::Close(_)) | Err(_) => break,
            }
        }
        // The connection sees the end of its stream.
        let _ = to_client.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; PIPE];
        loop {
            match from_client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let frame = Message::Binary(buf[..n].to_vec().into());
                    if sink.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sink.close().await;
    });
    Ok(outside)
}

fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(why.to_string()));
    *response.status_mut() = status;
    response
}
