//! `ais usage`: the usage ledger of a running server from the command line, read from
//! `GET /v1/usage`. By default a table of the top values of one scope over a day range
//! (requests, errors, tokens, cost, and `other` and the total); `--csv` writes the
//! server's billing export (every day and value) to stdout as it streams, for a
//! spreadsheet or a billing job.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

/// `ais usage` flags.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Base URL of the server
    #[arg(long, env = "AIS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key with read access (none when the server has no keys)
    #[arg(long, env = "AIS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Scope to count per: tenant, model, user_id or attr.KEY (a key listed in
    /// `[usage] attributes`)
    #[arg(long, default_value = "user_id")]
    pub by: String,
    /// First day, YYYY-MM-DD (UTC; default the first of the current month)
    #[arg(long)]
    pub from: Option<String>,
    /// Last day, YYYY-MM-DD, inclusive (UTC; default today)
    #[arg(long)]
    pub to: Option<String>,
    /// Rows of the table (1 to 1,000)
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// What the table is ranked by: requests, errors, input_tokens, output_tokens,
    /// cache_read_input_tokens or cost_usd
    #[arg(long, default_value = "cost_usd")]
    pub order: String,
    /// Another tenant's usage (admin keys)
    #[arg(long)]
    pub tenant: Option<String>,
    /// Every (day, value) row as CSV instead of the table
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Deserialize)]
struct Answer {
    tenant: String,
    from: String,
    to: String,
    by: String,
    groups: Vec<Group>,
    other: Option<Block>,
    total: Block,
    complete: bool,
}

#[derive(Debug, Deserialize)]
struct Group {
    key: std::collections::HashMap<String, Option<String>>,
    #[serde(flatten)]
    usage: Block,
}

#[derive(Debug, Deserialize)]
struct Block {
    requests: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost_usd: f64,
}

pub fn run(args: UsageArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(fetch(args))
}

async fn fetch(args: UsageArgs) -> anyhow::Result<()> {
    // No overall timeout: an export of a month streams for as long as it takes; the
    // connection itself must come up quickly.
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let url = format!("{}/v1/usage", args.url.trim_end_matches('/'));
    let mut query: Vec<(&str, String)> = vec![("by", args.by.clone())];
    for (name, value) in [
        ("from", &args.from),
        ("to", &args.to),
        ("tenant", &args.tenant),
    ] {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    if !args.csv {
        query.push(("top", args.top.to_string()));
        query.push(("order", args.order.clone()));
    }
    let mut request = client.get(&url).query(&query);
    if let Some(key) = &args.api_key {
        request = request.bearer_auth(key);
    }
    if args.csv {
        request = request.header("accept", "text/csv");
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    let mut response = crate::remote::accepted(response, &url).await?;
    if args.csv {
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the export ended early; the file is incomplete")?
        {
            stdout.write_all(&chunk)?;
        }
        stdout.flush()?;
        return Ok(());
    }
    let answer: Answer = response
        .json()
        .await
        .with_context(|| format!("{url} did not answer usage"))?;
    print!("{}", render(&answer));
    Ok(())
}

/// The table: a title, a header, one row per group, `other` and the total.
fn render(answer: &Answer) -> String {
    let mut out = format!(
        "usage of {} per {} · {} to {}{}\n",
        answer.tenant,
        answer.by,
        answer.from,
        answer.to,
        if answer.complete {
            ""
        } else {
            " · incomplete: the range starts before usage was counted"
        }
    );
    let label = answer.by.to_uppercase();
    let row = |name: &str, block: &Block| {
        format!(
            "{name:<32} {:>10} {:>8} {:>14} {:>14} {:>14.6}\n",
            block.requests, block.errors, block.input_tokens, block.output_tokens, block.cost_usd
        )
    };
    out.push_str(&format!(
        "{label:<32} {:>10} {:>8} {:>14} {:>14} {:>14}\n",
        "REQUESTS", "ERRORS", "INPUT TOKENS", "OUTPUT TOKENS", "COST USD"
    ));
    for group in &answer.groups {
        let name = group
            .key
            .get(&answer.by)
            .cloned()
            .flatten()
            .unwrap_or_else(|| "(none)".to_string());
        out.push_str(&row(&name, &group.usage));
    }
    if let Some(other) = &answer.other {
        out.push_str(&row("(other)", other));
    }
    out.push_str(&row("TOTAL", &answer.total));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_group_then_other_and_the_total() {
        let answer: Answer = serde_json::from_value(serde_json::json!({
            "tenant": "acme", "from": "2026-12-01", "to": "2026-12-07", "by": "user_id",
            "order": "cost_usd", "complete": true,
            "groups": [
                {"key": {"user_id": "u-1"}, "requests": 3, "errors": 1, "input_tokens": 10,
                 "output_tokens": 5, "cache_read_input_tokens": 0, "cost_usd": 1.5},
                {"key": {"user_id": null}, "requests": 1, "errors": 0, "input_tokens": 1,
                 "output_tokens": 1, "cache_read_input_tokens": 0, "cost_usd": 0.000001}
            ],
            "other": {"requests": 2, "errors": 0, "input_tokens": 2, "output_tokens": 2,
                      "cache_read_input_tokens": 0, "cost_usd": 0.25},
            "total": {"requests": 6, "errors": 1, "input_tokens": 13, "output_tokens": 8,
                      "cache_read_input_tokens": 0, "cost_usd": 1.750001}
        }))
        .expect("an answer");
        let table = render(&answer);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert!(lines[0].contains("acme per user_id"), "{table}");
        assert!(
            lines[2].starts_with("u-1") && lines[2].ends_with("1.500000"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("(none)") && lines[3].ends_with("0.000001"),
            "{table}"
        );
        assert!(lines[4].starts_with("(other)"), "{table}");
        assert!(
            lines[5].starts_with("TOTAL") && lines[5].ends_with("1.750001"),
            "{table}"
        );
    }
}
