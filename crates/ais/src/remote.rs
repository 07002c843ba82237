//! What the commands that read a running server share (`ais top`, `ais usage`): its
//! refusal of a request turned into an error that carries the server's own message.

use anyhow::bail;

/// `response` when it is a success; else an error naming the status and the server's
/// message (`{"error": …}`), and for a 401 how to pass a key.
pub async fn accepted(response: reqwest::Response, url: &str) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let message = body["error"].as_str().unwrap_or("no message");
    if status == reqwest::StatusCode::UNAUTHORIZED {
        bail!("{status}: {message}; pass a key with read access: --api-key KEY or AIS_API_KEY");
    }
    bail!("{status} from {url}: {message}");
}
