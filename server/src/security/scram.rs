//! SCRAM-SHA-256 credentials (RFC 5802, RFC 7677): what Strata stores for a password, in the
//! form Kafka and Redpanda store (salt, iteration count, StoredKey, ServerKey), so a SASL/SCRAM
//! exchange can later be run against the same users. The password itself is never stored.

use ring::{digest, hmac, pbkdf2, rand};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// PBKDF2 iterations of a new credential: Kafka's minimum for SCRAM-SHA-256 and its usual value.
pub const ITERATIONS_DEFAULT: u32 = 4096;
/// Fewest and most iterations a stored credential may have (the most bounds the work one
/// verification costs).
pub const ITERATIONS_MIN: u32 = 4096;
pub const ITERATIONS_MAX: u32 = 1_000_000;
/// Bytes of random salt in a new credential.
const SALT_BYTES: usize = 16;
/// Longest password accepted.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// A salted SCRAM-SHA-256 credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    #[serde(with = "base64_bytes")]
    pub salt: Vec<u8>,
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    #[serde(with = "base64_bytes")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    #[serde(with = "base64_bytes")]
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    /// Keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// Why a password or credential is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the password is empty")]
    EmptyPassword,
    #[error("the password is {0} bytes; at most {PASSWORD_BYTES_MAX} are accepted")]
    PasswordTooLong(usize),
    #[error("iterations must be between {ITERATIONS_MIN} and {ITERATIONS_MAX}, got {0}")]
    Iterations(u32),
    #[error("the system random source failed")]
    Random,
    #[error("a credential's salt and keys must be non-empty and the keys 32 bytes")]
    Malformed,
}

impl ScramCredential {
    /// A credential for `password` with a fresh random salt.
    ///
    /// # Errors
    /// An empty or too long password, iterations out of range, no randomness.
    pub fn new(password: &str, iterations: u32) -> Result<Self, CredentialError> {
        check_password(password)?;
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(CredentialError::Iterations(iterations));
        }
        let mut salt = vec![0; SALT_BYTES];
        rand::SecureRandom::fill(&rand::SystemRandom::new(), &mut salt)
            .map_err(|_| CredentialError::Random)?;
        Ok(Self::with_salt(password, salt, iterations))
    }

    /// The credential for `password` with `salt` (deterministic; tests and the RFC's vectors).
    pub(crate) fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password, &salt, iterations);
        Self {
            stored_key: digest::digest(&digest::SHA256, &hmac_sha256(&salted, b"Client Key"))
                .as_ref()
                .to_vec(),
            server_key: hmac_sha256(&salted, b"Server Key"),
            salt,
            iterations,
        }
    }

    /// Whether `password` is the one this credential was made from. The comparison of the
    /// derived key is constant-time; the work (PBKDF2) is the same for every wrong password.
    pub fn verify(&self, password: &str) -> bool {
        if check_password(password).is_err() || self.validate().is_err() {
            return false;
        }
        let salted = salted_password(password, &self.salt, self.iterations);
        let stored = digest::digest(&digest::SHA256, &hmac_sha256(&salted, b"Client Key"));
        constant_time_eq(stored.as_ref(), &self.stored_key)
    }

    /// Checks a credential from an untrusted source (a command in the controller's log).
    ///
    /// # Errors
    /// Iterations out of range or malformed keys.
    pub fn validate(&self) -> Result<(), CredentialError> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&self.iterations) {
            return Err(CredentialError::Iterations(self.iterations));
        }
        if self.salt.is_empty()
            || self.salt.len() > 64
            || self.stored_key.len() != 32
            || self.server_key.len() != 32
        {
            return Err(CredentialError::Malformed);
        }
        Ok(())
    }
}

fn check_password(password: &str) -> Result<(), CredentialError> {
    if password.is_empty() {
        return Err(CredentialError::EmptyPassword);
    }
    if password.len() > PASSWORD_BYTES_MAX {
        return Err(CredentialError::PasswordTooLong(password.len()));
    }
    Ok(())
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut salted = [0; 32];
    let iterations = NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut salted,
    );
    salted
}

/// HMAC-SHA-256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
        .as_ref()
        .to_vec()
}

/// Equality that takes the same time wherever the inputs differ (the length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    /// RFC 7677's example: user "user", password "pencil", salt "W22ZaJ0SNY7soEsUEjb6gQ==",
    /// 4096 iterations. Its ClientProof and ServerSignature follow from these keys; the
    /// ServerKey below is the one that gives the RFC's ServerSignature.
    #[test]
    fn rfc7677_vector() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("salt");
        let credential = ScramCredential::with_salt("pencil", salt, 4096);
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = hmac_sha256(&credential.server_key, auth_message.as_bytes());
        assert_eq!(
            STANDARD.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // The server's check of the RFC's ClientProof: ClientKey = proof XOR ClientSignature,
        // and H(ClientKey) must be the StoredKey.
        let proof = STANDARD
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .expect("proof");
        let client_signature = hmac_sha256(&credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let stored = digest::digest(&digest::SHA256, &client_key);
        assert!(constant_time_eq(stored.as_ref(), &credential.stored_key));
        assert!(credential.verify("pencil"));
        assert!(!credential.verify("pencil "));
        assert!(!credential.verify(""));
    }

    #[test]
    fn new_credentials_are_salted_and_checked() {
        let a = ScramCredential::new("secret", ITERATIONS_DEFAULT).expect("credential");
        let b = ScramCredential::new("secret", ITERATIONS_DEFAULT).expect("credential");
        assert_ne!(a.salt, b.salt, "each credential has its own salt");
        assert_ne!(a.stored_key, b.stored_key);
        assert!(a.verify("secret") && b.verify("secret"));
        assert!(!a.verify("Secret"));
        assert_eq!(
            ScramCredential::new("", ITERATIONS_DEFAULT),
            Err(CredentialError::EmptyPassword)
        );
        assert_eq!(
            ScramCredential::new("x", 10),
            Err(CredentialError::Iterations(10))
        );
        let json = serde_json::to_string(&a).expect("json");
        assert!(!json.contains("secret"));
        let back: ScramCredential = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, a);
        let mut broken = a.clone();
        broken.stored_key.pop();
        assert_eq!(broken.validate(), Err(CredentialError::Malformed));
        assert!(!broken.verify("secret"));
        assert!(!format!("{a:?}").contains("stored"));
    }
}
