//! `ais dlq list|replay`: the dead-letter queue of a running server, through its HTTP
//! API (`GET /v1/dlq`, `POST /v1/dlq/replay`), for `ais serve` and `ais query` alike.
//!
//! `list` prints one line per letter, newest first (id, time, reason, tenant, size,
//! detail), or the API's JSON with `--json`. `replay` re-appends the records of the
//! letters named by id, or of a time range, oldest first, and says which went in.

use std::fmt::Write as _;
use std::time::Duration;

use ais_model::time::format_rfc3339_ms;
use anyhow::{bail, Context};
use serde::Deserialize;

/// `ais dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters, newest first.
    List(ListArgs),
    /// Append the records of dead letters to the log again.
    Replay(ReplayArgs),
}

/// Where the server is and who asks.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// Base URL of the server (`ais serve`, or `ais query --kafka`)
    #[arg(long, env = "AIS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (none when the server has no keys); listing needs read access, replay an
    /// `all` or `admin` key
    #[arg(long, env = "AIS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// With an admin key: only this tenant's letters
    #[arg(long)]
    pub tenant: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Only letters dead-lettered at or after this time (RFC 3339 or unix ms)
    #[arg(long)]
    pub from: Option<String>,
    /// Only letters dead-lettered before this time (RFC 3339 or unix ms)
    #[arg(long)]
    pub to: Option<String>,
    /// Most letters shown (1 to 1000)
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print the API's JSON answer (records in base64) instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Letters to replay, by id (PARTITION:OFFSET, as `ais dlq list` shows them)
    pub ids: Vec<String>,
    /// Replay the letters dead-lettered at or after this time, oldest first
    #[arg(long, conflicts_with = "ids")]
    pub from: Option<String>,
    /// Replay the letters dead-lettered before this time
    #[arg(long, conflicts_with = "ids")]
    pub to: Option<String>,
    /// Replay every letter (oldest first, --limit at a time)
    #[arg(long, conflicts_with_all = ["ids", "from", "to"])]
    pub all: bool,
    /// Most letters one range replay takes (1 to 1000)
    #[arg(long, default_value_t = 100, conflicts_with = "ids")]
    pub limit: usize,
}

#[derive(Debug, Deserialize)]
struct ListAnswer {
    letters: Vec<LetterLine>,
    more: bool,
}

#[derive(Debug, Deserialize)]
struct LetterLine {
    id: String,
    reason: String,
    detail: String,
    tenant: Option<String>,
    dead_lettered_at: i64,
    record_bytes: usize,
}

#[derive(Debug, Deserialize)]
struct ReplayAnswer {
    replayed: Vec<String>,
    not_found: Vec<String>,
    more: bool,
}

pub fn run(command: DlqCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            DlqCommand::List(args) => list(args).await,
            DlqCommand::Replay(args) => replay(args).await,
        }
    })
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        // A listing of the distributed pipeline reads the dead-letter topic: allow it
        // the server's own 30 s bound and some.
        .timeout(Duration::from_secs(60))
        .build()
        .context("cannot build the HTTP client")
}

/// Sends `request` with the key; the JSON answer, or an error carrying the server's
/// message.
async fn send(
    request: reqwest::RequestBuilder,
    api: &ApiArgs,
) -> anyhow::Result<serde_json::Value> {
    let request = match &api.api_key {
        Some(key) => request.bearer_auth(key),
        None => request,
    };
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", api.url))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        let message = body["error"].as_str().unwrap_or("no message");
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!("{status}: {message}; pass a key: --api-key KEY or AIS_API_KEY");
        }
        bail!("{status}: {message}");
    }
    Ok(body)
}

/// `URL/path?params`, the parameters encoded.
fn endpoint(api: &ApiArgs, path: &str, params: &[(&str, String)]) -> anyhow::Result<reqwest::Url> {
    let base = format!("{}{path}", api.url.trim_end_matches('/'));
    reqwest::Url::parse_with_params(&base, params)
        .with_context(|| format!("--url {} is not a URL", api.url))
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    let optional = [
        ("from", &args.from),
        ("to", &args.to),
        ("tenant", &args.api.tenant),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    let request = client()?.get(endpoint(&args.api, "/v1/dlq", &query)?);
    let body = send(request, &args.api).await?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let answer: ListAnswer =
        serde_json::from_value(body).context("the server did not answer a dead-letter list")?;
    print!("{}", render(&answer));
    Ok(())
}

/// The letters as a table, and a last line when more match.
fn render(answer: &ListAnswer) -> String {
    let id_width = answer
        .letters
        .iter()
        .map(|letter| letter.id.len())
        .max()
        .unwrap_or(0)
        .max("ID".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<id_width$}  {:<24}  {:<19}  {:<16}  {:>7}  DETAIL",
        "ID", "DEAD-LETTERED", "REASON", "TENANT", "BYTES"
    );
    for letter in &answer.letters {
        let detail: String = letter.detail.chars().take(100).collect();
        let _ = writeln!(
            out,
            "{:<id_width$}  {:<24}  {:<19}  {:<16}  {:>7}  {}",
            letter.id,
            format_rfc3339_ms(letter.dead_lettered_at),
            letter.reason,
            letter.tenant.as_deref().unwrap_or("-"),
            letter.record_bytes,
            detail.replace(['\n', '\r'], " ")
        );
    }
    if answer.letters.is_empty() {
        out.push_str("(no dead letters)\n");
    }
    if answer.more {
        out.push_str("(more letters match: narrow --from/--to or raise --limit)\n");
    }
    out
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let body = if !args.ids.is_empty() {
        serde_json::json!({ "ids": args.ids })
    } else if args.all || args.from.is_some() || args.to.is_some() {
        let mut body = serde_json::json!({ "limit": args.limit });
        if let Some(from) = &args.from {
            body["from"] = from.clone().into();
        }
        if let Some(to) = &args.to {
            body["to"] = to.clone().into();
        }
        body
    } else {
        bail!("say which letters to replay: their ids, --from/--to, or --all");
    };
    let params: Vec<(&str, String)> = args
        .api
        .tenant
        .iter()
        .map(|tenant| ("tenant", tenant.clone()))
        .collect();
    let request = client()?
        .post(endpoint(&args.api, "/v1/dlq/replay", &params)?)
        .json(&body);
    let answer: ReplayAnswer = serde_json::from_value(send(request, &args.api).await?)
        .context("the server did not answer a replay")?;
    println!(
        "replayed {} dead letter(s){}",
        answer.replayed.len(),
        if answer.replayed.is_empty() {
            String::new()
        } else {
            format!(": {}", answer.replayed.join(" "))
        }
    );
    if !answer.not_found.is_empty() {
        println!("not found: {}", answer.not_found.join(" "));
    }
    if answer.more {
        println!("more letters match the range: run the same replay again for the next ones");
    }
    if answer.replayed.is_empty() && !answer.not_found.is_empty() {
        bail!("none of the ids names a dead letter this key may see");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_letter_on_one_line() {
        let answer = ListAnswer {
            letters: vec![
                LetterLine {
                    id: "0:12".to_string(),
                    reason: "invalid".to_string(),
                    detail: "model: must not be empty\nsecond line".to_string(),
                    tenant: Some("acme".to_string()),
                    dead_lettered_at: 1_795_339_620_000,
                    record_bytes: 42,
                },
                LetterLine {
                    id: "3:1004".to_string(),
                    reason: "undecodable".to_string(),
                    detail: "empty log record".to_string(),
                    tenant: None,
                    dead_lettered_at: 0,
                    record_bytes: 0,
                },
            ],
            more: true,
        };
        let text = render(&answer);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("ID "), "{text}");
        let first: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            first[..6],
            [
                "0:12",
                "2026-11-22T09:27:00Z",
                "invalid",
                "acme",
                "42",
                "model:"
            ]
        );
        assert!(
            lines[1].ends_with("must not be empty second line"),
            "{text}"
        );
        assert!(lines[2].contains(" - "), "no tenant shows as -: {text}");
        assert!(lines[3].starts_with("(more letters match"), "{text}");
        let empty = render(&ListAnswer {
            letters: Vec::new(),
            more: false,
        });
        assert!(empty.contains("(no dead letters)"), "{empty}");
    }
}
