//! Redaction of call payloads (an event's `input` and `output`), which ingest applies
//! before the log: what a rule matches is replaced by its placeholder, so the text as
//! sent is never durable anywhere. No I/O.
//!
//! Built-in rules, all on by default once payload capture is enabled:
//! e-mail addresses (`[EMAIL]`), API-key-like secrets (`[SECRET]`: common provider
//! prefixes, and long tokens of letters and digits with the entropy of a random key),
//! IBANs (`[IBAN]`, mod-97 checked), payment card numbers (`[CARD]`, 13 to 19 digits,
//! Luhn checked), IP addresses (`[IP]`, v4 and v6, parsed), and phone numbers (`[PHONE]`:
//! 8 to 15 digits written with a leading `+` or with separators). Custom rules are
//! regular expressions with a name; their placeholder is `[NAME]`. A pattern that does
//! not compile refuses the configuration, naming its rule.
//!
//! Rules run one after the other on the text the previous ones left, custom rules first,
//! then secrets, e-mails, IBANs, cards, IPs and phones last (the most general: a card
//! number or an address is gone before the phone rule reads what is left). Every pattern
//! is compiled by the `regex` crate, whose automata never backtrack, so no text makes a
//! rule take more than time linear in the text per match; checks (Luhn, mod-97, entropy,
//! address parsing) read the match and the characters around it.
//!
//! A built-in pattern does not read the whole text: [`prefilter`] finds, by a byte scan
//! several times cheaper than the pattern's, the runs of characters its matches can be
//! made of (a secret's letters, digits and `+/_-`; a card's digits, spaces and dashes;
//! …) that are long enough and hold the digits, colons or `@` a match needs, and the
//! pattern searches only those. Because the patterns have no anchors or look-around and
//! a match never crosses a character outside its set, a run holds the same matches,
//! leftmost-first and resumed after each one, as a search of the whole text finds in
//! it; a run skipped for too few digits holds only matches the check would reject. The
//! result, text and counts, is therefore the one a whole-text search gives; the tests
//! compare the two on generated and corpus texts. Custom rules, which may have anchors,
//! search the whole text.

use std::borrow::Cow;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use regex::Regex;

mod prefilter;
#[cfg(test)]
mod reference;

/// The built-in rules, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Secret,
    Email,
    Iban,
    Card,
    Ip,
    Phone,
}

impl Builtin {
    pub const ALL: [Builtin; 6] = [
        Builtin::Secret,
        Builtin::Email,
        Builtin::Iban,
        Builtin::Card,
        Builtin::Ip,
        Builtin::Phone,
    ];

    /// The name configurations and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Secret => "secret",
            Builtin::Email => "email",
            Builtin::Iban => "iban",
            Builtin::Card => "card",
            Builtin::Ip => "ip",
            Builtin::Phone => "phone",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|rule| rule.name() == name)
    }

    fn pattern(self) -> &'static str {
        match self {
            // Provider prefixes, then any long token (checked for entropy).
            Builtin::Secret => {
                r"(?:sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_\-]{16,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,}|AKIA[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}|glpat-[A-Za-z0-9_\-]{20,}|[A-Za-z0-9+/_\-]{32,})"
            }
            Builtin::Email => {
                r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
            }
            Builtin::Iban => r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
            Builtin::Card => r"[0-9](?:[ \-]?[0-9]){12,18}",
            Builtin::Ip => {
                r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*"
            }
            Builtin::Phone => r"\+?\(?[0-9]{1,4}\)?(?:[ .\-]?\(?[0-9]{2,4}\)?){2,4}",
        }
    }

    /// Whether every match of the rule's pattern holds a digit or a colon.
    fn needs_digit_or_colon(self) -> bool {
        matches!(
            self,
            Builtin::Iban | Builtin::Card | Builtin::Ip | Builtin::Phone
        )
    }

    /// Whether a match (`text[start..end]`) is what the rule means, beyond its pattern.
    fn accepts(self, text: &str, start: usize, end: usize) -> bool {
        let found = &text[start..end];
        match self {
            Builtin::Secret => {
                found.len() < 32 && !found.chars().all(|c| c.is_ascii_alphanumeric())
                    || found.starts_with("sk-")
                    || found.starts_with("AKIA")
                    || found.starts_with("AIza")
                    || found.starts_with("gh")
                    || found.starts_with("xox")
                    || found.starts_with("glpat-")
                    || looks_random(found)
            }
            Builtin::Email => true,
            Builtin::Iban => alone(text, start, end) && iban_checks(found),
            Builtin::Card => {
                let digits: Vec<u32> = found.chars().filter_map(|c| c.to_digit(10)).collect();
                alone(text, start, end) && (13..=19).contains(&digits.len()) && luhn(&digits)
            }
            Builtin::Ip => {
                alone_address(text, start, end)
                    && (found.parse::<Ipv4Addr>().is_ok()
                        || found.matches(':').count() >= 2 && found.parse::<Ipv6Addr>().is_ok())
            }
            Builtin::Phone => {
                let digits = found.chars().filter(char::is_ascii_digit).count();
                let written = found.starts_with('+')
                    || found.contains(['(', ' ', '-', '.'])
                        && !found
                            .trim_end_matches(|c: char| c.is_ascii_digit())
                            .is_empty();
                alone(text, start, end) && (8..=15).contains(&digits) && written
            }
        }
    }
}

/// Whether a match stands on its own: no letter or digit right before or after it (a
/// part of a longer number or word is not a number of its own).
fn alone(text: &str, start: usize, end: usize) -> bool {
    let joined = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !joined(text[..start].chars().next_back()) && !joined(text[end..].chars().next())
}

/// Like [`alone`], and not a part of a longer dotted or colon-separated run
/// (`1.2.3.4.5`); a full stop or colon that ends the sentence is not a part of it.
fn alone_address(text: &str, start: usize, end: usize) -> bool {
    let mut before = text[..start].chars().rev();
    let mut after = text[end..].chars();
    let joined = |next: Option<char>, beyond: Option<char>| match next {
        Some(c) if c.is_ascii_alphanumeric() => true,
        Some('.' | ':') => beyond.is_some_and(|c| c.is_ascii_alphanumeric()),
        _ => false,
    };
    let (b1, b2) = (before.next(), before.next());
    let (a1, a2) = (after.next(), after.next());
    !joined(b1, b2) && !joined(a1, a2)
}

/// The Luhn check of a card number's digits.
fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(position, &digit)| {
            if position % 2 == 1 {
                let doubled = digit * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                digit
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The ISO 13616 check: the country and check digits moved to the end, letters as
/// numbers (A = 10 … Z = 35), the whole ≡ 1 (mod 97).
fn iban_checks(found: &str) -> bool {
    let compact: Vec<char> = found.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let mut remainder: u32 = 0;
    for c in compact[4..].iter().chain(&compact[..4]) {
        let Some(value) = c.to_digit(36) else {
            return false;
        };
        remainder = if value < 10 {
            (remainder * 10 + value) % 97
        } else {
            (remainder * 100 + value) % 97
        };
    }
    remainder == 1
}

/// A long token reads as a random key: letters and digits mixed, and about as many
/// distinct symbols as a random string of its length would have (Shannon entropy of
/// at least 4 bits a symbol), so words, paths and repeated characters are not one.
fn looks_random(token: &str) -> bool {
    let has_digit = token.chars().any(|c| c.is_ascii_digit());
    let has_letter = token.chars().any(|c| c.is_ascii_alphabetic());
    if !(has_digit && has_letter) {
        return false;
    }
    let mut counts = [0u32; 128];
    for byte in token.bytes() {
        counts[usize::from(byte & 0x7f)] += 1;
    }
    let length = token.len() as f64;
    let entropy: f64 = counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let share = f64::from(count) / length;
            -share * share.log2()
        })
        .sum();
    entropy >= 4.0
}

/// A rule that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedactError {
    #[error("payload redaction rule {name:?}: {error}")]
    Pattern { name: String, error: String },
    #[error("payload redaction rule {0:?}: a name of letters, digits, '_' and '-' (1 to 32)")]
    Name(String),
    #[error("payload redaction: unknown built-in rule {0:?}; use secret, email, iban, card, ip or phone")]
    Unknown(String),
}

enum Check {
    Builtin(Builtin),
    Custom,
}

struct Rule {
    name: String,
    placeholder: String,
    regex: Regex,
    check: Check,
}

/// The rules of a deployment, compiled once.
pub struct Redactor {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_list()
            .entries(self.rules.iter().map(|rule| &rule.name))
            .finish()
    }
}

impl Redactor {
    /// `builtins` by name (`None`: all of them), then `custom` (name, pattern) rules,
    /// which run first.
    pub fn new(
        builtins: Option<&[String]>,
        custom: &[(String, String)],
    ) -> Result<Self, RedactError> {
        let mut rules = Vec::new();
        for (name, pattern) in custom {
            let valid = !name.is_empty()
                && name.len() <= 32
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return Err(RedactError::Name(name.clone()));
            }
            let regex = Regex::new(pattern).map_err(|error| RedactError::Pattern {
                name: name.clone(),
                error: error.to_string(),
            })?;
            rules.push(Rule {
                placeholder: format!("[{}]", name.to_ascii_uppercase()),
                name: name.clone(),
                regex,
                check: Check::Custom,
            });
        }
        let chosen: Vec<Builtin> = match builtins {
            None => Builtin::ALL.to_vec(),
            Some(names) => {
                let mut chosen = Vec::new();
                for name in names {
                    chosen.push(
                        Builtin::parse(name).ok_or_else(|| RedactError::Unknown(name.clone()))?,
                    );
                }
                // The built-in order, whatever the configuration's.
                Builtin::ALL
                    .into_iter()
                    .filter(|rule| chosen.contains(rule))
                    .collect()
            }
        };
        for builtin in chosen {
            let regex = Regex::new(builtin.pattern()).map_err(|error| RedactError::Pattern {
                name: builtin.name().to_string(),
                error: error.to_string(),
            })?;
            rules.push(Rule {
                name: builtin.name().to_string(),
                placeholder: format!("[{}]", builtin.name().to_ascii_uppercase()),
                regex,
                check: Check::Builtin(builtin),
            });
        }
        Ok(Self { rules })
    }

    /// The rules' names, in the order they run.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| rule.name.as_str())
    }

    /// `text` with every match of every rule replaced by its placeholder; `counted` is
    /// called with each rule's name and how many it replaced (when any).
    pub fn redact<'t>(&self, text: &'t str, mut counted: impl FnMut(&str, u64)) -> Cow<'t, str> {
        let mut current: Cow<'t, str> = Cow::Borrowed(text);
        // Whether the text holds a digit or a colon, which every match of the IBAN, card,
        // IP and phone patterns does: one scan for the four rules, again only after a
        // rule has changed the text.
        let mut holds_numbers: Option<bool> = None;
        for rule in &self.rules {
            if let Check::Builtin(builtin) = rule.check {
                let numbers = || prefilter::holds_digit_or_colon(&current);
                if builtin.needs_digit_or_colon() && !*holds_numbers.get_or_insert_with(numbers) {
                    continue;
                }
            }
            let mut out = String::new();
            let mut last = 0;
            let mut replaced = 0u64;
            rule.for_each_match(&current, |start, end| {
                let accepted = match rule.check {
                    Check::Custom => start < end,
                    Check::Builtin(builtin) => builtin.accepts(&current, start, end),
                };
                if !accepted {
                    return;
                }
                out.push_str(&current[last..start]);
                out.push_str(&rule.placeholder);
                last = end;
                replaced += 1;
            });
            if replaced > 0 {
                out.push_str(&current[last..]);
                current = Cow::Owned(out);
                holds_numbers = None;
                counted(&rule.name, replaced);
            }
        }
        current
    }
}

impl Rule {
    /// Calls `visit` with the start and end of each match of the rule's pattern in
    /// `text`, as `find_iter` over the whole text yields them (leftmost-first, not
    /// overlapping), except matches its check would reject anyway (see [`prefilter`]).
    /// A built-in rule's pattern searches only the prefilter's windows; a custom one,
    /// which may have anchors or look-around, the whole text.
    fn for_each_match(&self, text: &str, mut visit: impl FnMut(usize, usize)) {
        let Check::Builtin(builtin) = self.check else {
            for found in self.regex.find_iter(text) {
                visit(found.start(), found.end());
            }
            return;
        };
        let mut search = |window: Range<usize>| {
            // Regions start and end on character boundaries already (they end at ASCII
            // bytes or the text's ends); moving outwards to one keeps the slice
            // infallible whatever, and adds only bytes outside the pattern's class.
            let mut end = window.end.min(text.len());
            let mut start = window.start.min(end);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            while !text.is_char_boundary(end) {
                end += 1;
            }
            for found in self.regex.find_iter(&text[start..end]) {
                visit(start + found.start(), start + found.end());
            }
        };
        let mut pending: Option<Range<usize>> = None;
        prefilter::for_each_region(builtin, text, |region| match &mut pending {
            Some(window) if region.start.saturating_sub(window.end) <= prefilter::WINDOW_GAP => {
                window.end = region.end;
            }
            _ => {
                if let Some(window) = pending.replace(region) {
                    search(window);
                }
            }
        });
        if let Some(window) = pending {
            search(window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Redactor {
        Redactor::new(None, &[]).expect("the built-in rules compile")
    }

    fn redacted(text: &str) -> String {
        all().redact(text, |_, _| {}).into_owned()
    }

    /// Each positive example is replaced whole by the rule's placeholder; each negative
    /// one is left exactly as it was.
    fn corpus(placeholder: &str, positives: &[&str], negatives: &[&str]) {
        for positive in positives {
            let text = format!("before {positive} after");
            assert_eq!(
                redacted(&text),
                format!("before {placeholder} after"),
                "{positive:?} is redacted as {placeholder}"
            );
        }
        for negative in negatives {
            let text = format!("before {negative} after");
            assert_eq!(redacted(&text), text, "{negative:?} is left alone");
        }
    }

    #[test]
    fn emails() {
        corpus(
            "[EMAIL]",
            &[
                "ada@example.com",
                "first.last+tag@mail.example.co.uk",
                "x_y-z@sub.domain.io",
            ],
            &["ada at example dot com", "@handle", "user@localhost"],
        );
    }

    #[test]
    fn cards_pass_luhn_or_are_left_alone() {
        corpus(
            "[CARD]",
            &[
                "4111 1111 1111 1111",
                "4111-1111-1111-1111",
                "5500005555555559",
                "378282246310005",
            ],
            &[
                "4111 1111 1111 1112",
                "5500005555555558",
                "1234567812345678",
                "order 12345",
            ],
        );
    }

    #[test]
    fn ibans_pass_mod_97_or_are_left_alone() {
        corpus(
            "[IBAN]",
            &[
                "DE89370400440532013000",
                "GB82 WEST 1234 5698 7654 32",
                "FR1420041010050500013M02606",
            ],
            &["DE89370400440532013001", "GB83WEST12345698765432"],
        );
    }

    #[test]
    fn secrets() {
        corpus(
            "[SECRET]",
            &[
                "sk-proj-abcdefghijklmnop1234",
                "sk-ant-api03-AbCdEfGhIjKlMnOpQrSt",
                "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
                "AKIAIOSFODNN7EXAMPLE",
                "xoxb-1234567890-abcdefghij",
                "AIzaSyA1234567890abcdefghijklmnopqrstuv",
                "glpat-abcdefghij1234567890",
                "Zx8qL2mN7vB4cR9tY1uI5oP3aS6dF0gHjK",
            ],
            &[
                "internationalization_and_localization",
                "/usr/local/share/applications/default",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                "sk-short",
            ],
        );
    }

    #[test]
    fn ip_addresses() {
        corpus(
            "[IP]",
            &[
                "192.168.1.20",
                "10.0.0.1",
                "2001:db8::8a2e:370:7334",
                "fe80::1",
            ],
            &["999.1.1.1", "1.2.3", "12:30:45", "version 1.2.3.4.5"],
        );
    }

    #[test]
    fn phones() {
        corpus(
            "[PHONE]",
            &[
                "+1 415 555 0132",
                "(415) 555-0132",
                "+44 20 7946 0958",
                "415-555-0132",
            ],
            &["2024", "in 3 to 5 days", "12345678", "3.14159"],
        );
    }

    #[test]
    fn rules_are_counted_and_custom_rules_run_first() {
        let redactor = Redactor::new(
            None,
            &[("ticket".to_string(), r"TICKET-[0-9]+".to_string())],
        )
        .expect("compiles");
        let mut counts = Vec::new();
        let text = "TICKET-42 from ada@example.com and bob@example.org";
        let out = redactor.redact(text, |rule, count| counts.push((rule.to_string(), count)));
        assert_eq!(out, "[TICKET] from [EMAIL] and [EMAIL]");
        assert_eq!(
            counts,
            vec![("ticket".to_string(), 1), ("email".to_string(), 2)]
        );
        // Nothing to redact: the text itself, not a copy.
        assert!(matches!(
            redactor.redact("plain words", |_, _| {}),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_rule_that_does_not_compile_is_refused_by_name() {
        let error = Redactor::new(None, &[("broken".to_string(), "(unclosed".to_string())])
            .expect_err("refused");
        assert!(error.to_string().contains("\"broken\""), "{error}");
        let error = Redactor::new(Some(&["email".to_string(), "ssn".to_string()]), &[])
            .expect_err("refused");
        assert!(error.to_string().contains("\"ssn\""), "{error}");
    }

    #[test]
    fn only_the_chosen_builtins_run() {
        let emails_only = Redactor::new(Some(&["email".to_string()]), &[]).expect("compiles");
        let text = "ada@example.com from 192.168.1.20";
        assert_eq!(
            emails_only.redact(text, |_, _| {}),
            "[EMAIL] from 192.168.1.20"
        );
    }

    proptest::proptest! {
        /// No text makes redaction panic; what it returns has none of the addresses it
        /// was given and is never longer than the text plus the placeholders.
        #[test]
        fn any_text_redacts_without_panicking(
            prefix in ".{0,200}",
            local in "[a-z]{1,12}",
            domain in "[a-z]{2,12}",
            suffix in ".{0,200}",
        ) {
            let address = format!("{local}@{domain}.com");
            let text = format!("{prefix} {address} {suffix}");
            let out = redacted(&text);
            proptest::prop_assert!(!out.contains(&address), "{out:?}");
        }

        #[test]
        fn arbitrary_bytes_as_text_never_panic(text in "(?s).{0,2000}") {
            let _ = redacted(&text);
        }

        #[test]
        fn long_runs_of_what_rules_look_for_are_handled(
            unit in proptest::sample::select(vec!["a@", "1 ", "::", "9.", "+1", "sk-", "ab12", "DE89"]),
            count in 1usize..4_000,
        ) {
            let text = unit.repeat(count);
            let out = redacted(&text);
            proptest::prop_assert!(out.len() <= text.len() * 4);
        }
    }
}
