//! "Did you mean": the closest known name to a misspelt one, for unknown
//! keys and unknown upstream references.

/// The closest of `candidates` to `word`: within edit distance 2 (and at
/// most half of `word`, so `x` does not suggest `ca`), or one a prefix of the
/// other (at least 3 characters shared).
pub(super) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for cand in candidates {
        if cand == word {
            continue;
        }
        let d = levenshtein(word, cand);
        let shared_prefix =
            word.len().min(cand.len()) >= 3 && (cand.starts_with(word) || word.starts_with(cand));
        let close = d <= 2 && 2 * d <= word.chars().count();
        if (close || shared_prefix) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, cand));
        }
    }
    best.map(|(_, c)| c)
}

/// Edit distance (insertions, deletions, substitutions) between two strings.
pub(super) fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("stikcy", "sticky"), 2);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn suggestions() {
        let keys = ["name", "sticky", "sticky_salt", "sticky_missing", "weight"];
        assert_eq!(suggest("stikcy", keys), Some("sticky"));
        assert_eq!(suggest("wieght", keys), Some("weight"));
        assert_eq!(suggest("sticky_sal", keys), Some("sticky_salt"));
        assert_eq!(suggest("zzz", keys), None);
        assert_eq!(suggest("x", ["ca", "url"]), None);
        assert_eq!(suggest("admn", ["admin", "server"]), Some("admin"));
    }
}
