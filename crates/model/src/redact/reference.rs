//! Redaction by whole-text search, the definition the prefiltered [`Redactor::redact`]
//! must meet: every rule's pattern over the whole text, a rule skipped only when the
//! text lacks a byte its matches need. The tests here compare the two, text and
//! counts, on generated texts and on every pair of corpus pieces.

use std::borrow::Cow;

use super::{Builtin, Check, Redactor};

impl Builtin {
    /// Whether `text` can hold a match at all, by a scan far cheaper than the pattern's:
    /// card, phone and IBAN numbers have digits, addresses digits or colons, e-mail
    /// addresses an `@`.
    fn may_match(self, text: &str) -> bool {
        let bytes = text.as_bytes();
        match self {
            Builtin::Secret => true,
            Builtin::Email => bytes.contains(&b'@'),
            Builtin::Iban | Builtin::Card | Builtin::Phone => bytes.iter().any(u8::is_ascii_digit),
            Builtin::Ip => bytes.iter().any(|b| b.is_ascii_digit() || *b == b':'),
        }
    }
}

impl Redactor {
    /// `text` with every match of every rule replaced by its placeholder; `counted` is
    /// called with each rule's name and how many it replaced (when any).
    pub(super) fn redact_reference<'t>(
        &self,
        text: &'t str,
        mut counted: impl FnMut(&str, u64),
    ) -> Cow<'t, str> {
        let mut current: Cow<'t, str> = Cow::Borrowed(text);
        for rule in &self.rules {
            if let Check::Builtin(builtin) = rule.check {
                if !builtin.may_match(&current) {
                    continue;
                }
            }
            let mut out = String::new();
            let mut last = 0;
            let mut replaced = 0u64;
            for found in rule.regex.find_iter(&current) {
                let accepted = match rule.check {
                    Check::Custom => !found.as_str().is_empty(),
                    Check::Builtin(builtin) => {
                        builtin.accepts(&current, found.start(), found.end())
                    }
                };
                if !accepted {
                    continue;
                }
                out.push_str(&current[last..found.start()]);
                out.push_str(&rule.placeholder);
                last = found.end();
                replaced += 1;
            }
            if replaced > 0 {
                out.push_str(&current[last..]);
                current = Cow::Owned(out);
                counted(&rule.name, replaced);
            }
        }
        current
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every built-in rule and a custom one (which runs first), then each built-in rule
    /// alone, so that a rule is also compared on text no earlier rule has changed.
    fn redactors() -> Vec<Redactor> {
        let mut redactors = vec![Redactor::new(
            None,
            &[("ticket".to_string(), r"TICKET-[0-9]+".to_string())],
        )
        .expect("the rules compile")];
        for builtin in Builtin::ALL {
            redactors.push(
                Redactor::new(Some(&[builtin.name().to_string()]), &[]).expect("the rule compiles"),
            );
        }
        redactors
    }

    type Counts = Vec<(String, u64)>;

    fn redacted_both_ways(redactor: &Redactor, text: &str) -> ((String, Counts), (String, Counts)) {
        let mut counts = Vec::new();
        let prefiltered = redactor
            .redact(text, |rule, count| counts.push((rule.to_string(), count)))
            .into_owned();
        let mut reference_counts = Vec::new();
        let reference = redactor
            .redact_reference(text, |rule, count| {
                reference_counts.push((rule.to_string(), count));
            })
            .into_owned();
        ((prefiltered, counts), (reference, reference_counts))
    }

    fn assert_same(redactors: &[Redactor], text: &str) {
        for redactor in redactors {
            let (prefiltered, reference) = redacted_both_ways(redactor, text);
            assert_eq!(prefiltered, reference, "{redactor:?} on {text:?}");
        }
    }

    /// `digits` and a last digit that makes them pass the Luhn check.
    fn luhn_valid(mut digits: Vec<u32>) -> String {
        digits.push(0);
        for check in 0..10 {
            if let Some(last) = digits.last_mut() {
                *last = check;
            }
            if super::super::luhn(&digits) {
                break;
            }
        }
        digits.iter().map(u32::to_string).collect()
    }

    /// An IBAN whose check digits are right for its country and account.
    fn mod_97_valid(country: &str, account: &str) -> String {
        for check in 0..100 {
            let candidate = format!("{country}{check:02}{account}");
            if super::super::iban_checks(&candidate) {
                return candidate;
            }
        }
        format!("{country}00{account}")
    }

    /// Spaces or dashes every four characters, or none.
    fn grouped(compact: &str, separator: &str) -> String {
        let characters: Vec<char> = compact.chars().collect();
        characters
            .chunks(4)
            .map(|group| group.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(separator)
    }

    fn piece() -> impl Strategy<Value = String> {
        let separator = || prop::sample::select(vec!["", " ", "-"]);
        let patterns = [
            // Prose.
            "[a-z]{1,12}",
            "[A-Z][a-z]{0,10}",
            "[A-F0-9]{1,6}",
            // Digits with separators, `+` signs, parentheses, colons and dots.
            "[0-9]{1,5}([ .\\-:/]{0,2}[0-9]{1,5}){0,6}",
            "\\+?\\(?[0-9]{1,4}\\)?([ .\\-]?\\(?[0-9]{2,4}\\)?){1,5}",
            "[0-9a-fA-F]{0,4}(::?[0-9a-fA-F]{0,4}){1,8}(\\.[0-9]{1,3}){0,3}",
            "[0-9]{1,4}(\\.[0-9]{1,4}){1,6}",
            "[:.+()]{1,4}",
            // E-mail-like pieces.
            "[a-zA-Z0-9._%+\\-]{0,10}@[a-z0-9\\-.]{0,10}(\\.[a-zA-Z]{1,4}){0,2}",
            // Long base64- and hex-like tokens.
            "[A-Za-z0-9+/_\\-]{8,70}",
            "[0-9a-f]{14,70}",
            "[a-z]{12,40}",
            // IBAN-like, not checked.
            "[A-Z]{2}[0-9]{2}( ?[A-Z0-9]{1,4}){2,9}",
            "TICKET-[0-9]{1,6}",
            // Unicode: letters, digits of other scripts, wide characters.
            "[é٣０日本語ß😀\u{0300}]{1,4}",
            "\\PC{1,4}",
        ];
        let mut pieces: Vec<BoxedStrategy<String>> = patterns
            .into_iter()
            .map(|pattern| pattern.boxed())
            .collect();
        // Provider key prefixes and what follows them.
        pieces.push(
            (
                prop::sample::select(vec![
                    "sk-",
                    "sk-proj-",
                    "sk-ant-",
                    "sk-ant-api03-",
                    "sk-ant-api٣٣-",
                    "sk-ant-api",
                    "ghp_",
                    "gho_",
                    "github_pat_",
                    "AKIA",
                    "xoxb-",
                    "xox",
                    "AIza",
                    "glpat-",
                ]),
                "[A-Za-z0-9_\\-]{0,50}",
            )
                .prop_map(|(prefix, rest)| format!("{prefix}{rest}"))
                .boxed(),
        );
        // IBANs with the right check digits, grouped by fours or not.
        pieces.push(
            ("[A-Z]{2}", "[A-Z0-9]{8,32}", prop::bool::ANY)
                .prop_map(|(country, account, spaced)| {
                    grouped(
                        &mod_97_valid(&country, &account),
                        if spaced { " " } else { "" },
                    )
                })
                .boxed(),
        );
        // Card-like numbers, Luhn-valid and not.
        pieces.push(
            (prop::collection::vec(0u32..10, 11..20), separator())
                .prop_map(|(digits, separator)| grouped(&luhn_valid(digits), separator))
                .boxed(),
        );
        pieces.push(
            ("[0-9]{12,20}", separator())
                .prop_map(|(digits, separator)| grouped(&digits, separator))
                .boxed(),
        );
        // Placeholders, as earlier rules leave them.
        pieces.push(
            prop::sample::select(vec!["[EMAIL]", "[SECRET]", "[CARD]", "[IP]", "[TICKET]"])
                .prop_map(str::to_string)
                .boxed(),
        );
        prop::strategy::Union::new(pieces)
    }

    fn text() -> impl Strategy<Value = String> {
        let joint = prop::sample::select(vec![
            "", " ", " ", ", ", ". ", "\n", "-", ":", ".", "/", "+",
        ]);
        prop::collection::vec((piece(), joint), 0..24).prop_map(|pieces| {
            pieces
                .into_iter()
                .map(|(piece, joint)| format!("{piece}{joint}"))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The prefiltered redaction returns what the whole-text one does, text and
        /// counts, for every rule set.
        #[test]
        fn prefiltered_redaction_equals_the_reference(text in text()) {
            thread_local! {
                static REDACTORS: Vec<Redactor> = redactors();
            }
            REDACTORS.with(|redactors| {
                for redactor in redactors {
                    let (prefiltered, reference) = redacted_both_ways(redactor, &text);
                    prop_assert_eq!(prefiltered, reference, "{:?}", redactor);
                }
                Ok(())
            })?;
        }

        /// The same on arbitrary characters, and on long runs far apart and close
        /// together (the windows that join regions).
        #[test]
        fn prefiltered_redaction_equals_the_reference_on_any_text(
            text in "(?s).{0,300}",
            filler in prop::sample::select(vec![" ", "x", "a b ", "1", "é"]),
            gap in 0usize..150,
        ) {
            let joined = format!(
                "{text}{}4111 1111 1111 1111{}Zx8qL2mN7vB4cR9tY1uI5oP3aS6dF0gHjK{}+1 415 555 0132",
                filler.repeat(gap),
                filler.repeat(gap),
                filler.repeat(gap),
            );
            thread_local! {
                static REDACTORS: Vec<Redactor> = redactors();
            }
            REDACTORS.with(|redactors| {
                for candidate in [&text, &joined] {
                    for redactor in redactors {
                        let (prefiltered, reference) = redacted_both_ways(redactor, candidate);
                        prop_assert_eq!(prefiltered, reference, "{:?}", redactor);
                    }
                }
                Ok(())
            })?;
        }
    }

    /// Every pair of these pieces, joined by each of these joints: what each rule must
    /// find and must leave, pressed against each other.
    #[test]
    fn every_pair_of_corpus_pieces_redacts_as_the_reference() {
        let pieces = [
            "ada@example.com",
            "first.last+tag@mail.example.co.uk",
            "user@localhost",
            "@handle",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500005555555559",
            "4111 1111 1111 1112",
            "1234567812345678",
            "DE89370400440532013000",
            "GB82 WEST 1234 5698 7654 32",
            "DE89370400440532013001",
            "sk-proj-abcdefghijklmnop1234",
            "sk-ant-api03-AbCdEfGhIjKlMnOpQrSt",
            "sk-ant-api٣٣-AbCdEfGhIjKlMnOpQrSt",
            "ghp_0123456789abcdefghijklmnopqrstuvwxyz",
            "AKIAIOSFODNN7EXAMPLE",
            "xoxb-1234567890-abcdefghij",
            "xoxb-12345678",
            "AIzaSyA1234567890abcdefghijklmnopqrstuv",
            "glpat-abcdefghij1234567890",
            "Zx8qL2mN7vB4cR9tY1uI5oP3aS6dF0gHjK",
            "internationalization_and_localization",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "192.168.1.20",
            "999.1.1.1",
            "1.2.3.4.5",
            "2001:db8::8a2e:370:7334",
            "fe80::1",
            "::",
            "12:30:45",
            "+1 415 555 0132",
            "(415) 555-0132",
            "+44 20 7946 0958",
            "12345678",
            "3.14159",
            "2024",
            "[EMAIL]",
            "TICKET-42",
            "naïve",
            "日本語",
            "",
        ];
        let joints = ["", " ", ".", ":", "-", "+", "/", "é", ". "];
        let redactors = redactors();
        for first in pieces {
            for second in pieces {
                for joint in joints {
                    assert_same(&redactors, &format!("{first}{joint}{second}"));
                    assert_same(&redactors, &format!("x {first}{joint}{second}{joint}"));
                }
            }
        }
    }
}
