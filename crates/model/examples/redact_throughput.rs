//! Measures payload redaction (`ais_model::redact`, every built-in rule) on calls
//! shaped like the payload benchmark's: 2 KiB prompts and 1 KiB answers of prose, one
//! in four carrying an e-mail address, a phone number and a card number. Prints calls
//! per second on one core and MB/s of text: `cargo run --release -p ais-model --example
//! redact_throughput [RULE|all] [dense]` (one built-in rule alone; default all).
//! `dense`: texts of the same sizes made of what redaction must read closely instead
//! of prose: base64 and hex tokens, timestamps, decimals and version numbers.

use std::time::Instant;

use ais_model::redact::Redactor;

const CALLS: usize = 20_000;

fn prose(bytes: usize, seed: usize) -> String {
    let words = [
        "the",
        "model",
        "answered",
        "quickly",
        "about",
        "invoice",
        "shipping",
        "order",
        "refund",
        "policy",
        "customer",
        "account",
        "summary",
        "translate",
        "paragraph",
    ];
    let mut text = String::with_capacity(bytes + 16);
    let mut n = seed;
    while text.len() < bytes {
        text.push_str(words[n % words.len()]);
        text.push(' ');
        n = n.wrapping_mul(31).wrapping_add(7);
    }
    text.truncate(bytes);
    text
}

/// Tokens, hashes and numbers, as tool output and logs hold them.
fn dense(bytes: usize, seed: usize) -> String {
    const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(bytes + 64);
    let mut n = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = || {
        n ^= n << 13;
        n ^= n >> 7;
        n ^= n << 17;
        n
    };
    while text.len() < bytes {
        match next() % 5 {
            0 => {
                for _ in 0..40 {
                    text.push(char::from(BASE64[next() % BASE64.len()]));
                }
            }
            1 => text.push_str(&format!("{:016x}{:016x}", next() as u64, next() as u64)),
            2 => text.push_str(&format!(
                "2026-12-07T{:02}:{:02}:{:02}Z",
                next() % 24,
                next() % 60,
                next() % 60
            )),
            3 => text.push_str(&format!(
                "{}.{} v{}.{}.{}",
                next() % 10_000,
                next() % 100,
                next() % 10,
                next() % 20,
                next() % 50
            )),
            _ => text.push_str("status ok, retries"),
        }
        text.push(' ');
    }
    text.truncate(bytes);
    text
}

fn main() {
    let only = std::env::args().nth(1).filter(|rule| rule != "all");
    let text = if std::env::args().nth(2).as_deref() == Some("dense") {
        dense
    } else {
        prose
    };
    let redactor = Redactor::new(only.map(|rule| vec![rule]).as_deref(), &[])
        .expect("the built-in rules compile");
    let calls: Vec<(String, String)> = (0..CALLS)
        .map(|n| {
            let mut prompt = text(2_048, n);
            let answer = text(1_024, n + 1);
            if n % 4 == 0 {
                prompt.replace_range(
                    100..180,
                    "mail ada@example.com or call +1 415 555 0132, card 4111 1111 1111 1111 now ",
                );
            }
            (prompt, answer)
        })
        .collect();
    let bytes: usize = calls.iter().map(|(p, a)| p.len() + a.len()).sum();
    for round in 0..3 {
        let started = Instant::now();
        let mut replaced = 0u64;
        for (prompt, answer) in &calls {
            for text in [prompt, answer] {
                let out = redactor.redact(text, |_, count| replaced += count);
                std::hint::black_box(out);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "round {round}: {:.0} calls/s, {:.1} MB/s of text, {replaced} replacements",
            CALLS as f64 / seconds,
            bytes as f64 / seconds / 1e6
        );
    }
}
