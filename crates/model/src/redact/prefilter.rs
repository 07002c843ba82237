//! Where a built-in rule's pattern can match, found by reading bytes: the regions of a
//! text that the pattern then searches instead of the whole text.
//!
//! Every built-in pattern matches only characters of a small set (its *class*: letters,
//! digits and `+/_-` for secrets; digits, spaces and `-` for cards; …) and has no
//! anchors or look-around, so a match lies inside one maximal run of class bytes, and
//! whether a run holds a match, and where, depends on that run alone. Searching each
//! run on its own therefore finds exactly the matches a search of the whole text finds
//! there: the same leftmost-first matches, resumed after each one as `find_iter` does.
//! A run is skipped when it cannot hold a match that the rule's check would accept
//! (too short for the pattern, or with fewer digits than the check requires); the
//! matches skipped that way would all have been rejected, and a rejected match changes
//! nothing after its run. Runs are found from an *anchor* byte every match holds (a
//! digit, a colon, `@`), looked for a block of bytes at a time, or, for secrets, whose
//! runs are long, from aligned groups of eight class bytes, also a block at a time.
//!
//! A window handed to the pattern is one region, or several with the bytes between
//! them: those bytes are outside the class, or form runs whose matches would be
//! rejected, so a window still finds what its regions hold and nothing the check keeps.

use std::ops::Range;

use super::Builtin;

/// Class bits, one per rule, in [`CLASSES`].
const SECRET: u8 = 1 << 0;
const EMAIL: u8 = 1 << 1;
const IBAN: u8 = 1 << 2;
const CARD: u8 = 1 << 3;
const IP: u8 = 1 << 4;
const PHONE: u8 = 1 << 5;
/// The bytes of non-ASCII characters. Of all the built-in patterns only the secret
/// pattern's `\d` (any Unicode digit, in `sk-ant-api\d\d-`) matches one.
const WIDE: u8 = 1 << 6;

/// The byte classes of every built-in pattern: bit `RULE` of `CLASSES[byte]` is set
/// when `byte` can be a part of a match of the rule's pattern. Each set is read off the
/// pattern in [`Builtin::pattern`]; `the_classes_hold_every_match` checks them.
static CLASSES: [u8; 256] = classes();

const fn classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut index = 0;
    while index < 256 {
        let byte = index as u8;
        let mut bits = 0;
        if byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'_' | b'-') {
            bits |= SECRET;
        }
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'%' | b'+' | b'-' | b'@') {
            bits |= EMAIL;
        }
        if byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b' ' {
            bits |= IBAN;
        }
        if byte.is_ascii_digit() || matches!(byte, b' ' | b'-') {
            bits |= CARD;
        }
        if byte.is_ascii_hexdigit() || matches!(byte, b':' | b'.') {
            bits |= IP;
        }
        if byte.is_ascii_digit() || matches!(byte, b'+' | b'(' | b')' | b' ' | b'.' | b'-') {
            bits |= PHONE;
        }
        if byte >= 0x80 {
            bits |= WIDE;
        }
        table[index] = bits;
        index += 1;
    }
    table
}

/// The fewest characters a secret match has: `xox[abposr]-` and ten more (every other
/// alternative of the pattern needs more), so a run of fewer bytes holds none.
const SECRET_SHORTEST: usize = 15;

/// The fewest characters an IBAN match has: two letters, two digits and eleven more.
const IBAN_SHORTEST: usize = 15;

/// The fewest digits a match needs for the card check (13 to 19 digits, Luhn).
const CARD_DIGITS: usize = 13;

/// The fewest digits a match needs for the phone check (8 to 15 digits).
const PHONE_DIGITS: usize = 8;

/// Regions this close together are searched as one window: each search has a cost to
/// start that a short region does not repay, and the bytes between two regions cannot
/// make the window find what its regions do not hold (see the module docs).
pub(super) const WINDOW_GAP: usize = 64;

/// What one run of class bytes holds.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    length: usize,
    digits: usize,
    uppercase: usize,
    colons: usize,
    dots: usize,
}

impl Tally {
    fn add(&mut self, byte: u8) {
        self.length += 1;
        self.digits += usize::from(byte.is_ascii_digit());
        self.uppercase += usize::from(byte.is_ascii_uppercase());
        self.colons += usize::from(byte == b':');
        self.dots += usize::from(byte == b'.');
    }
}

/// Calls `visit` with each region of `text` that can hold a match of `builtin`'s
/// pattern that the rule's check accepts: maximal runs of the pattern's class, in
/// order, not overlapping, on character boundaries.
pub(super) fn for_each_region(builtin: Builtin, text: &str, visit: impl FnMut(Range<usize>)) {
    let bytes = text.as_bytes();
    match builtin {
        Builtin::Secret => {
            // A match holds a non-ASCII character only as one of the two digits after
            // `sk-ant-api`; without that literal in the text, no match holds one.
            let wide = !text.is_ascii() && text.contains("sk-ant-api");
            secret_runs(bytes, wide, visit);
        }
        // Exactly one `@` in every match.
        Builtin::Email => anchored_runs(bytes, EMAIL, |byte| byte == b'@', |_| true, visit),
        // Two capitals, then two digits, then eleven to thirty more.
        Builtin::Iban => anchored_runs(
            bytes,
            IBAN,
            |byte| byte.is_ascii_digit(),
            |tally| tally.length >= IBAN_SHORTEST && tally.digits >= 2 && tally.uppercase >= 2,
            visit,
        ),
        Builtin::Card => anchored_runs(
            bytes,
            CARD,
            |byte| byte.is_ascii_digit(),
            |tally| tally.digits >= CARD_DIGITS,
            visit,
        ),
        // A v4 address has three dots and at least four digits; the other alternative
        // at least two colons.
        Builtin::Ip => anchored_runs(
            bytes,
            IP,
            |byte| byte.is_ascii_digit() || byte == b':',
            |tally| tally.colons >= 2 || tally.dots >= 3 && tally.digits >= 4,
            visit,
        ),
        Builtin::Phone => anchored_runs(
            bytes,
            PHONE,
            |byte| byte.is_ascii_digit(),
            |tally| tally.digits >= PHONE_DIGITS,
            visit,
        ),
    }
}

/// Whether `text` holds an ASCII digit or a colon.
pub(super) fn holds_digit_or_colon(text: &str) -> bool {
    find_anchor(text.as_bytes(), 0, |byte| {
        byte.is_ascii_digit() || byte == b':'
    })
    .is_some()
}

fn in_class(byte: u8, class: u8) -> bool {
    CLASSES[usize::from(byte)] & class != 0
}

/// The maximal runs of `class` bytes that hold an `anchor` byte (every anchor is a
/// class byte) and whose [`Tally`] `qualifies`.
fn anchored_runs(
    bytes: &[u8],
    class: u8,
    anchor: impl Fn(u8) -> bool + Copy,
    qualifies: impl Fn(&Tally) -> bool,
    mut visit: impl FnMut(Range<usize>),
) {
    // `cursor` is 0 or just after a byte outside the class, so a run that reaches back
    // to it starts there.
    let mut cursor = 0;
    while let Some(found) = find_anchor(bytes, cursor, anchor) {
        debug_assert!(in_class(bytes[found], class));
        let mut start = found;
        while start > cursor && in_class(bytes[start - 1], class) {
            start -= 1;
        }
        let mut end = start;
        let mut tally = Tally::default();
        while let Some(&byte) = bytes.get(end).filter(|&&byte| in_class(byte, class)) {
            tally.add(byte);
            end += 1;
        }
        if qualifies(&tally) {
            visit(start..end);
        }
        // `bytes[end]` is outside the class (or the text has ended).
        cursor = end + 1;
    }
}

/// The first `anchor` byte at or after `from`. Blocks of 64 bytes are tested whole
/// first, by a fixed-length loop without an early exit that the compiler turns into a
/// few vector instructions. Kept out of line, so that each rule's instance is compiled
/// on its own.
#[inline(never)]
fn find_anchor(bytes: &[u8], from: usize, anchor: impl Fn(u8) -> bool + Copy) -> Option<usize> {
    let rest = bytes.get(from..)?;
    let (blocks, remainder) = rest.as_chunks::<BLOCK>();
    let mut offset = from;
    for block in blocks {
        if block
            .iter()
            .fold(0u8, |any, &byte| any | u8::from(anchor(byte)))
            != 0
        {
            return block
                .iter()
                .position(|&byte| anchor(byte))
                .map(|index| offset + index);
        }
        offset += BLOCK;
    }
    remainder
        .iter()
        .position(|&byte| anchor(byte))
        .map(|index| offset + index)
}

/// The maximal runs of secret-class bytes at least [`SECRET_SHORTEST`] long (`wide`:
/// non-ASCII bytes count as class bytes). Such a run holds a whole group of [`GROUP`]
/// class bytes at a multiple of [`GROUP`] from the text's start (any 15 positions in a
/// row cover one of 8), so the search marks such groups a block at a time, without
/// branching on each byte, and reads a run byte by byte only around a marked group.
fn secret_runs(bytes: &[u8], wide: bool, mut visit: impl FnMut(Range<usize>)) {
    const { assert!(SECRET_SHORTEST >= 2 * GROUP - 1) };
    let class = if wide { SECRET | WIDE } else { SECRET };
    // Every long run starting before `from` has been visited, and `from` is 0 or just
    // after a byte outside the class, so no run reaches back past it, and a full group
    // starting before it lies inside a run already read.
    let mut from = 0;
    let mut run_around = |group: usize| {
        if group < from {
            return;
        }
        let mut start = group;
        while start > from && in_class(bytes[start - 1], class) {
            start -= 1;
        }
        let mut end = group + GROUP;
        while bytes.get(end).is_some_and(|&byte| in_class(byte, class)) {
            end += 1;
        }
        if end - start >= SECRET_SHORTEST {
            visit(start..end);
        }
        // `bytes[end]` is outside the class (or the text has ended).
        from = end + 1;
    };
    let (blocks, remainder) = bytes.as_chunks::<BLOCK>();
    for (index, block) in blocks.iter().enumerate() {
        let mut full = full_groups(block, wide);
        while full != 0 {
            let group = full.trailing_zeros() as usize;
            full &= full - 1;
            run_around(index * BLOCK + group * GROUP);
        }
    }
    // A group that the text ends inside holds no run of SECRET_SHORTEST's own group.
    let (groups, _) = remainder.as_chunks::<GROUP>();
    for (index, group) in groups.iter().enumerate() {
        if group.iter().all(|&byte| is_secret_byte(byte, wide)) {
            run_around(blocks.len() * BLOCK + index * GROUP);
        }
    }
}

/// Bytes tested at once by [`find_anchor`] and [`full_groups`].
const BLOCK: usize = 64;

/// The size of the groups [`secret_runs`] looks for; a block holds eight.
const GROUP: usize = 8;

/// Whether `byte` is in the secret pattern's class: [`CLASSES`]' `SECRET` bit (and
/// `WIDE`, when `wide`), as comparisons the compiler can run on many bytes at once.
fn is_secret_byte(byte: u8, wide: bool) -> bool {
    (byte | 0x20).wrapping_sub(b'a') < 26
        || byte.wrapping_sub(b'0') < 10
        || matches!(byte, b'+' | b'/' | b'_' | b'-')
        || wide && byte >= 0x80
}

/// Bit `g` set for each group `g` of `block` that is all secret-class bytes.
#[inline(never)]
fn full_groups(block: &[u8; BLOCK], wide: bool) -> u8 {
    const { assert!(BLOCK / GROUP == 8) };
    let mut hits = [0u8; BLOCK];
    for (hit, &byte) in hits.iter_mut().zip(block) {
        *hit = u8::from(is_secret_byte(byte, wide));
    }
    let (groups, _) = hits.as_chunks::<GROUP>();
    groups.iter().enumerate().fold(0u8, |full, (index, group)| {
        full | u8::from(*group == [1; GROUP]) << index
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(builtin: Builtin, text: &str) -> Vec<Range<usize>> {
        let mut found = Vec::new();
        for_each_region(builtin, text, |region| found.push(region));
        found
    }

    /// Every byte of every match of a built-in pattern is in the rule's class, on texts
    /// that hold every byte value's character next to the patterns' literals.
    #[test]
    fn the_classes_hold_every_match() {
        let rules = [
            (Builtin::Secret, SECRET),
            (Builtin::Email, EMAIL),
            (Builtin::Iban, IBAN),
            (Builtin::Card, CARD),
            (Builtin::Ip, IP),
            (Builtin::Phone, PHONE),
        ];
        for (builtin, class) in rules {
            let regex = regex::Regex::new(builtin.pattern()).expect("compiles");
            for byte in 0u8..=127 {
                let c = char::from(byte);
                let text = format!(
                    "sk-ant-api1{c}-abcdefghijklmnop1234 a{c}b@example.com DE89{c}3704004405320130 4111{c}1111 1111 1111 +1{c}415 555 0132 10.0{c}0.1 fe80{c}:1 {c}{c}{c}"
                );
                for found in regex.find_iter(&text) {
                    for matched in found.as_str().bytes() {
                        assert!(
                            in_class(matched, class),
                            "{}: {:?} in {:?}",
                            builtin.name(),
                            char::from(matched),
                            found.as_str()
                        );
                    }
                }
            }
        }
        // The one non-ASCII case: a Unicode digit after `sk-ant-api`.
        let secret = regex::Regex::new(Builtin::Secret.pattern()).expect("compiles");
        let text = "sk-ant-api٣٣-AbCdEfGhIjKlMnOpQrSt";
        assert_eq!(secret.find(text).map(|found| found.as_str()), Some(text));
        assert_eq!(regions(Builtin::Secret, text), vec![0..text.len()]);
    }

    #[test]
    fn the_secret_comparisons_are_the_secret_class() {
        for byte in 0..=u8::MAX {
            assert_eq!(
                is_secret_byte(byte, false),
                in_class(byte, SECRET),
                "{byte:#04x}"
            );
            assert_eq!(
                is_secret_byte(byte, true),
                in_class(byte, SECRET | WIDE),
                "{byte:#04x}"
            );
        }
    }

    #[test]
    fn long_runs_are_found_whole() {
        let text = "a short line, then Zx8qL2mN7vB4cR9tY1uI5oP3aS6dF0gHjK and xoxb-1234567890 end";
        let found = regions(Builtin::Secret, text);
        let words: Vec<&str> = found.iter().map(|region| &text[region.clone()]).collect();
        assert_eq!(
            words,
            ["Zx8qL2mN7vB4cR9tY1uI5oP3aS6dF0gHjK", "xoxb-1234567890"]
        );
        // Exactly the shortest length, at either end of the text.
        let edge = "abcdefghijklmno";
        assert_eq!(regions(Builtin::Secret, edge), vec![0..15]);
        assert!(regions(Builtin::Secret, &edge[1..]).is_empty());
        let ends = format!("{edge} x {edge}");
        assert_eq!(regions(Builtin::Secret, &ends), vec![0..15, 18..33]);
    }

    #[test]
    fn anchored_runs_reach_back_past_the_anchor() {
        let text = "call +1 (415) 555-0132. or 12 34";
        let found = regions(Builtin::Phone, text);
        assert_eq!(found, vec![4..24]);
        assert_eq!(&text[found[0].clone()], " +1 (415) 555-0132. ");
        assert!(regions(Builtin::Card, "order 12345").is_empty());
        assert_eq!(regions(Builtin::Ip, "at fe80::1 now"), vec![3..10]);
    }

    /// The qualifying maximal runs, read byte by byte.
    fn expected_regions(builtin: Builtin, text: &str) -> Vec<Range<usize>> {
        let class = match builtin {
            Builtin::Secret if text.contains("sk-ant-api") => SECRET | WIDE,
            Builtin::Secret => SECRET,
            Builtin::Email => EMAIL,
            Builtin::Iban => IBAN,
            Builtin::Card => CARD,
            Builtin::Ip => IP,
            Builtin::Phone => PHONE,
        };
        let bytes = text.as_bytes();
        let mut expected = Vec::new();
        let mut start = 0;
        while start < bytes.len() {
            if !in_class(bytes[start], class) {
                start += 1;
                continue;
            }
            let mut end = start;
            let mut tally = Tally::default();
            while end < bytes.len() && in_class(bytes[end], class) {
                tally.add(bytes[end]);
                end += 1;
            }
            let keep = match builtin {
                Builtin::Secret => tally.length >= SECRET_SHORTEST,
                Builtin::Email => bytes[start..end].contains(&b'@'),
                Builtin::Iban => {
                    tally.length >= IBAN_SHORTEST && tally.digits >= 2 && tally.uppercase >= 2
                }
                Builtin::Card => tally.digits >= CARD_DIGITS,
                Builtin::Ip => tally.colons >= 2 || tally.dots >= 3 && tally.digits >= 4,
                Builtin::Phone => tally.digits >= PHONE_DIGITS,
            };
            if keep {
                expected.push(start..end);
            }
            start = end;
        }
        expected
    }

    /// Every rule's regions of `text` are the maximal runs that qualify.
    fn regions_qualify(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        for builtin in Builtin::ALL {
            proptest::prop_assert_eq!(
                regions(builtin, text),
                expected_regions(builtin, text),
                "{}",
                builtin.name()
            );
        }
        Ok(())
    }

    proptest::proptest! {
        /// The regions are exactly the maximal runs that qualify, on texts of the
        /// patterns' characters and a few others.
        #[test]
        fn regions_are_the_qualifying_maximal_runs(
            text in "[a-zA-Z0-9 .:@+()\\-/_é٣]{0,300}",
        ) {
            regions_qualify(&text)?;
        }

        /// The same on words of every length between separators, up to several
        /// blocks long, where runs start and end at every offset of a block.
        #[test]
        fn regions_are_found_at_every_offset(
            text in "([a-z0-9_]{0,40}[ .é,]{1,2}){0,40}(sk-ant-api)?",
        ) {
            regions_qualify(&text)?;
        }
    }
}
