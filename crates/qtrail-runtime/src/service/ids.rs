//! The ids the service gives new programs and jobs.

use rand::Rng;

fn random_suffix(length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..length).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

/// Returns a program id: the name lowercased, with anything but letters and digits turned into
/// single dashes, cut to 48 characters, plus a random suffix.
pub(super) fn program_id(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 48 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "program" } else { slug };
    format!("{slug}-{}", random_suffix(10))
}

/// Returns a job id: `c` and 19 random lowercase letters and digits.
pub(super) fn job_id() -> String {
    format!("c{}", random_suffix(19))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_ids_are_slugs_with_a_suffix() {
        let id = program_id("My Bell Pair!");
        assert!(id.starts_with("my-bell-pair-"), "{id}");
        assert_eq!(id.len(), "my-bell-pair-".len() + 10);
        assert!(program_id("ü:ü").starts_with("program-"));
        assert!(program_id(&"x".repeat(200)).len() <= 48 + 11);
        assert_eq!(job_id().len(), 20);
    }
}
