//! Secrets: argon2id password hashes, random tokens and their SHA-256 hashes.
//! Nothing here logs, and nothing returned by it is logged.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};

/// Length of generated access and refresh tokens, in alphanumeric characters
/// (about 238 bits of entropy).
const TOKEN_CHARS: usize = 40;

/// Length of generated device IDs, in upper-case letters (as Synapse).
const DEVICE_ID_CHARS: usize = 10;

/// argon2id memory per hash, in KiB: 7 MiB.
///
/// OWASP's password storage cheat sheet lists equally strong argon2id
/// settings that trade memory for passes (19 MiB x 2, 12 MiB x 3, 9 MiB x 4,
/// 7 MiB x 5, ...); Neurite takes 7 MiB x 5 so a login costs a small server
/// little resident memory for the same work.
pub(crate) const ARGON2_MEMORY_KIB: u32 = 7 * 1024;

/// argon2id passes over the memory (OWASP: 5 with 7 MiB).
pub(crate) const ARGON2_PASSES: u32 = 5;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, None).expect("constant argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password with argon2id ([`ARGON2_MEMORY_KIB`],
/// [`ARGON2_PASSES`], one lane). CPU-heavy: call it from a blocking task.
pub(crate) fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Checks a password against a stored PHC hash, with the parameters stored in
/// it (so hashes made with other settings keep working). CPU-heavy: call it
/// from a blocking task.
pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| argon2().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A hash to verify against when the account does not exist, so that a login
/// for an unknown user takes as long as one with a wrong password.
pub(crate) fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("neurite-dummy-password").expect("hashing a constant cannot fail"))
}

fn random_chars(n: usize) -> String {
    rand::thread_rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

/// A new access or refresh token; `prefix` tells them apart in bug reports.
pub(crate) fn new_token(prefix: &str) -> String {
    format!("{prefix}_{}", random_chars(TOKEN_CHARS))
}

/// The form a token is stored in: its SHA-256. Tokens carry enough entropy
/// that a fast hash is safe; the database never holds a usable token.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new device ID.
pub(crate) fn new_device_id() -> String {
    let mut rng = rand::thread_rng();
    (0..DEVICE_ID_CHARS).map(|_| rng.gen_range(b'A'..=b'Z') as char).collect()
}

/// A new opaque ID for sessions and registration tokens (`[A-Za-z0-9]`).
pub(crate) fn new_opaque_id(len: usize) -> String {
    random_chars(len)
}

/// Threads that hash and verify passwords. Each argon2id run takes
/// [`ARGON2_MEMORY_KIB`]; on one dedicated thread at most one such buffer
/// exists at a time, where on the general blocking pool every thread's
/// allocator arena would keep its own copy (seen: 460 MiB resident after a
/// burst of logins). One also bounds the CPU a login flood can take to one
/// core (about 30 logins a second here).
pub(crate) const PASSWORD_THREADS_MAX: usize = 1;

/// Password jobs waiting for a thread before callers wait to queue more.
pub(crate) const PASSWORD_QUEUE_LEN_MAX: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// A small pool of threads for the CPU- and memory-heavy password work.
/// The threads end when the pool is dropped.
pub(crate) struct PasswordPool {
    jobs: tokio::sync::mpsc::Sender<Job>,
}

impl PasswordPool {
    /// Starts the pool's threads.
    pub(crate) fn new() -> Self {
        let (jobs, receiver) = tokio::sync::mpsc::channel::<Job>(PASSWORD_QUEUE_LEN_MAX);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        for i in 0..PASSWORD_THREADS_MAX {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("neurite-password-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is released before the job runs.
                        let job = receiver.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
                        match job {
                            Some(job) => job(),
                            None => return,
                        }
                    }
                })
                .expect("the OS can start a thread");
        }
        Self { jobs }
    }

    /// Runs `f` on a pool thread; `None` if the pool is gone.
    pub(crate) async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs.send(Box::new(move || drop(tx.send(f())))).await.ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_are_argon2id_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        // A hash made with other parameters (the crate's defaults, 19 MiB x 2)
        // still verifies: the parameters come from the stored hash.
        let salt = SaltString::generate(&mut OsRng);
        let old = Argon2::default().hash_password(b"correct horse", &salt).unwrap().to_string();
        assert!(old.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{old}");
        assert!(verify_password("correct horse", &old));
        assert!(!verify_password("wrong horse", &old));
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token("nat"), new_token("nat"));
        assert_ne!(a, b);
        assert!(a.starts_with("nat_") && a.len() == 4 + TOKEN_CHARS);
        assert_eq!(token_hash(&a).len(), 32);
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
