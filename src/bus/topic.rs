//! AMQP topic patterns, matched as a topic exchange matches routing keys: words are separated
//! by `.`, `*` stands for exactly one word and `#` for zero or more words.

/// Whether `routing_key` matches `pattern`.
pub fn matches(pattern: &str, routing_key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = routing_key.split('.').collect();
    match_words(&p, &k)
}

fn match_words(p: &[&str], k: &[&str]) -> bool {
    match p.split_first() {
        None => k.is_empty(),
        Some((&"#", rest)) => (0..=k.len()).any(|i| match_words(rest, &k[i..])),
        Some((&"*", rest)) => !k.is_empty() && match_words(rest, &k[1..]),
        Some((w, rest)) => k.first() == Some(w) && match_words(rest, &k[1..]),
    }
}

/// A pattern the broker accepts as a binding key: non-empty words of printable ASCII without
/// spaces, at most 255 bytes.
pub fn is_valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 255
        && pattern.split('.').all(|w| !w.is_empty())
        && pattern.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_stars_and_hashes() {
        let key = "org.fedoraproject.prod.bodhi.updates.fedora.sync";
        assert!(matches(key, key));
        assert!(matches("org.fedoraproject.prod.bodhi.updates.*.sync", key));
        assert!(matches("org.fedoraproject.#", key));
        assert!(matches("#", key));
        assert!(matches("org.#.sync", key));
        assert!(!matches(
            "org.fedoraproject.prod.bodhi.updates.epel.sync",
            key
        ));
        assert!(!matches("org.*.sync", key));
        assert!(matches(
            "org.example.prod.mirrorpush.sync.#",
            "org.example.prod.mirrorpush.sync.fedora"
        ));
        assert!(matches("a.#", "a"));
        assert!(!is_valid_pattern("a..b"));
        assert!(!is_valid_pattern("a b"));
    }
}
