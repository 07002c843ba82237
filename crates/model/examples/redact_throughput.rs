//! Measures payload redaction (`ais_model::redact`, every built-in rule) on calls
//! shaped like the payload benchmark's: 2 KiB prompts and 1 KiB answers of prose, one
//! in four carrying an e-mail address, a phone number and a card number. Prints calls
//! per second on one core and MB/s of text: `cargo run --release -p ais-model --example
//! redact_throughput [RULE]` (one built-in rule alone; default all).

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

fn main() {
    let only = std::env::args().nth(1);
    let redactor = Redactor::new(only.map(|rule| vec![rule]).as_deref(), &[])
        .expect("the built-in rules compile");
    let calls: Vec<(String, String)> = (0..CALLS)
        .map(|n| {
            let mut prompt = prose(2_048, n);
            let answer = prose(1_024, n + 1);
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
