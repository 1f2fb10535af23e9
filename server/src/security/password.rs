//! Password checks every frontend shares (gRPC's Basic credentials and the Kafka listener's
//! SASL, through one `Authenticator`; the HTTP console later): the `Basic` credentials of an `authorization` header ([`parse_basic`]), the
//! per-source slowdown of failed attempts ([`Slowdown`]) and the cache of verified passwords
//! ([`CredentialCache`]). Passwords themselves are checked by
//! [`ScramCredential::verify`](super::scram::ScramCredential::verify).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

use super::scram::{self, ScramCredential};

/// The first delay before answering a failed password from a source.
pub const FAILURE_DELAY_MIN: Duration = Duration::from_millis(100);
/// The longest delay; each failure doubles the delay up to it.
pub const FAILURE_DELAY_MAX: Duration = Duration::from_secs(5);
/// A source with no failure for this long starts again from [`FAILURE_DELAY_MIN`].
pub const FAILURE_QUIET: Duration = Duration::from_secs(60);
/// Most sources the slowdown table remembers; beyond it the longest quiet is forgotten.
pub const FAILURE_SOURCES_MAX: usize = 4096;
/// Most users whose last verified password is cached.
pub const CREDENTIAL_CACHE_ENTRIES_MAX: usize = 4096;
/// Longest `authorization` metadata value read (a user name of 255 bytes and a password of
/// 1024, base64-encoded, with the scheme).
const AUTHORIZATION_BYTES_MAX: usize = 2048;

/// Parses an `authorization` metadata value `Basic base64(user:password)` into the user name
/// and password (the password may hold `:`; the user name cannot).
///
/// # Errors
/// What is wrong with the value, without repeating it (it may hold a password).
pub fn parse_basic(value: &[u8]) -> Result<(String, String), String> {
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return Err(format!(
            "the authorization value is {} bytes, at most {AUTHORIZATION_BYTES_MAX} are read",
            value.len()
        ));
    }
    let text = std::str::from_utf8(value)
        .map_err(|_| "the authorization value is not text".to_string())?;
    let (scheme, encoded) = text
        .trim()
        .split_once(' ')
        .ok_or("the authorization value must be `Basic <base64(user:password)>`")?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(format!(
            "the authorization scheme is {scheme:?}; this node takes `Basic`"
        ));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the Basic credentials are not valid base64".to_string())?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| "the Basic credentials are not UTF-8 text".to_string())?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("the Basic credentials must be `user:password` (no ':' found)")?;
    if user.is_empty() || password.is_empty() {
        return Err("the Basic credentials have an empty user name or password".to_string());
    }
    Ok((user.to_string(), password.to_string()))
}

/// Failed attempts per source address, and the delay before the next failure is answered:
/// [`FAILURE_DELAY_MIN`] doubling to [`FAILURE_DELAY_MAX`], forgotten after
/// [`FAILURE_QUIET`]. Time is passed in. `None` is the source of connections whose address
/// is unknown (they share one entry).
#[derive(Debug, Default)]
pub struct Slowdown {
    sources: HashMap<Option<IpAddr>, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Slowdown {
    /// Records a failure from `source` at `now`; returns how long to wait before answering it.
    pub fn record_failure(&mut self, source: Option<IpAddr>, now: Instant) -> Duration {
        if self.sources.len() >= FAILURE_SOURCES_MAX && !self.sources.contains_key(&source) {
            self.sources
                .retain(|_, failures| now.saturating_duration_since(failures.last) < FAILURE_QUIET);
            if self.sources.len() >= FAILURE_SOURCES_MAX
                && let Some(oldest) = self
                    .sources
                    .iter()
                    .min_by_key(|(_, failures)| failures.last)
                    .map(|(source, _)| *source)
            {
                self.sources.remove(&oldest);
            }
        }
        let failures = self.sources.entry(source).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.saturating_duration_since(failures.last) >= FAILURE_QUIET {
            failures.count = 0;
        }
        failures.count = failures.count.saturating_add(1);
        failures.last = now;
        let count = failures.count;
        assert!(self.sources.len() <= FAILURE_SOURCES_MAX);
        Self::delay(count)
    }

    /// The delay of the `count`-th failure in a row (from 1).
    fn delay(count: u32) -> Duration {
        let doublings = count.saturating_sub(1).min(16);
        FAILURE_DELAY_MIN
            .saturating_mul(1 << doublings)
            .min(FAILURE_DELAY_MAX)
    }

    /// Sources remembered.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// The last password each user proved, remembered as an HMAC under a key drawn at process
/// start (so the cache never holds a password, nor anything that can be checked against one
/// elsewhere), valid only while the user's stored credential is the one it was checked
/// against: a new password or a deleted user invalidates it. Spares PBKDF2 on every call of
/// a client that sends the same password each time. At most
/// [`CREDENTIAL_CACHE_ENTRIES_MAX`] users.
pub struct CredentialCache {
    key: hmac::Key,
    entries: HashMap<String, CachedProof>,
}

struct CachedProof {
    password_mac: Vec<u8>,
    /// The stored credential's StoredKey and salt when the password was checked.
    stored_key: Vec<u8>,
    salt: Vec<u8>,
}

impl CredentialCache {
    /// # Errors
    /// The system's random source failed.
    pub fn new() -> Result<Self, String> {
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| "the system random source failed".to_string())?;
        Ok(Self {
            key,
            entries: HashMap::new(),
        })
    }

    fn mac(&self, password: &str) -> Vec<u8> {
        hmac::sign(&self.key, password.as_bytes()).as_ref().to_vec()
    }

    /// Whether `password` is the one last verified for `user` against `credential`.
    pub fn verified(&self, user: &str, password: &str, credential: &ScramCredential) -> bool {
        self.entries.get(user).is_some_and(|proof| {
            proof.stored_key == credential.stored_key
                && proof.salt == credential.salt
                && scram::constant_time_eq(&proof.password_mac, &self.mac(password))
        })
    }

    /// Remembers that `password` matched `credential` for `user`.
    pub fn insert(&mut self, user: &str, password: &str, credential: &ScramCredential) {
        if self.entries.len() >= CREDENTIAL_CACHE_ENTRIES_MAX
            && !self.entries.contains_key(user)
            && let Some(evicted) = self.entries.keys().next().cloned()
        {
            // Any entry: a evicted user only pays one PBKDF2 again.
            self.entries.remove(&evicted);
        }
        let proof = CachedProof {
            password_mac: self.mac(password),
            stored_key: credential.stored_key.clone(),
            salt: credential.salt.clone(),
        };
        self.entries.insert(user.to_string(), proof);
        assert!(self.entries.len() <= CREDENTIAL_CACHE_ENTRIES_MAX);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> Vec<u8> {
        format!("Basic {}", STANDARD.encode(text)).into_bytes()
    }

    #[test]
    fn basic_headers_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_basic(&basic("alice:s3cret")),
            Ok(("alice".to_string(), "s3cret".to_string()))
        );
        // The password may hold ':'; the scheme is case-insensitive.
        let mut lower = basic("alice:a:b");
        lower[0] = b'b';
        assert_eq!(
            parse_basic(&lower),
            Ok(("alice".to_string(), "a:b".to_string()))
        );
        let cases: &[(Vec<u8>, &str)] = &[
            (b"Basic !!!not-base64".to_vec(), "base64"),
            (basic("alice-no-colon"), "no ':'"),
            (basic(""), "Basic <base64"),
            (basic(":password"), "empty"),
            (basic("alice:"), "empty"),
            (b"Bearer abc".to_vec(), "scheme"),
            (b"Basic".to_vec(), "Basic <base64"),
            (b"".to_vec(), "Basic <base64"),
            (vec![0xff, 0xfe], "not text"),
            (
                format!("Basic {}", "A".repeat(4000)).into_bytes(),
                "at most",
            ),
        ];
        for (value, expected) in cases {
            let error = parse_basic(value).expect_err("refused");
            assert!(error.contains(expected), "{value:?}: {error}");
            assert!(!error.contains("password\""), "never echoes: {error}");
        }
        let secret = parse_basic(&basic("alice")).expect_err("refused");
        assert!(
            !secret.contains("alice"),
            "the value is not repeated: {secret}"
        );
    }

    #[test]
    fn failures_slow_a_source_down_and_are_forgotten_after_a_quiet_minute() {
        let mut slowdown = Slowdown::default();
        let start = Instant::now();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        let delays: Vec<u64> = (0..8)
            .map(|i| {
                slowdown
                    .record_failure(a, start + Duration::from_secs(i))
                    .as_millis() as u64
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // Another source is not slowed by a's failures.
        assert_eq!(slowdown.record_failure(b, start), FAILURE_DELAY_MIN);
        // A quiet minute after its last failure, a starts again from the first delay.
        let later = start + Duration::from_secs(7) + FAILURE_QUIET;
        assert_eq!(slowdown.record_failure(a, later), FAILURE_DELAY_MIN);
        assert_eq!(
            slowdown.record_failure(a, later + Duration::from_secs(1)),
            FAILURE_DELAY_MIN * 2
        );
    }

    #[test]
    fn the_slowdown_table_is_bounded() {
        let mut slowdown = Slowdown::default();
        let start = Instant::now();
        for i in 0..(FAILURE_SOURCES_MAX as u32 + 100) {
            let source = Some(IpAddr::from(i.to_be_bytes()));
            slowdown.record_failure(source, start + Duration::from_millis(u64::from(i)));
            assert!(slowdown.len() <= FAILURE_SOURCES_MAX);
        }
        assert_eq!(slowdown.len(), FAILURE_SOURCES_MAX);
        // The newest source is remembered: its second failure waits longer.
        let newest = Some(IpAddr::from(
            (FAILURE_SOURCES_MAX as u32 + 99).to_be_bytes(),
        ));
        assert_eq!(
            slowdown.record_failure(newest, start + Duration::from_secs(10)),
            FAILURE_DELAY_MIN * 2
        );
    }

    #[test]
    fn the_credential_cache_holds_only_the_verified_password_of_the_current_credential() {
        let mut cache = CredentialCache::new().expect("random");
        let first = ScramCredential::new("one", scram::ITERATIONS_DEFAULT).expect("credential");
        assert!(!cache.verified("alice", "one", &first));
        cache.insert("alice", "one", &first);
        assert!(cache.verified("alice", "one", &first));
        assert!(!cache.verified("alice", "two", &first), "another password");
        assert!(!cache.verified("bob", "one", &first), "another user");
        // A changed password (a new credential, new salt) invalidates the entry, even for the
        // old password and even if the new password is the same text.
        let second = ScramCredential::new("one", scram::ITERATIONS_DEFAULT).expect("credential");
        assert!(!cache.verified("alice", "one", &second));
        // Bounded.
        for i in 0..CREDENTIAL_CACHE_ENTRIES_MAX + 10 {
            cache.insert(&format!("user-{i}"), "one", &first);
            assert!(cache.len() <= CREDENTIAL_CACHE_ENTRIES_MAX);
        }
    }
}
