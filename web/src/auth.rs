//! `basic_auth_users`: bcrypt-checked HTTP basic authentication whose
//! timing does not tell whether a user name exists, with a cache of
//! successful checks so a scrape every 15 s does not cost a bcrypt each.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Successful checks remembered before the cache is emptied and refilled:
/// far more than the scrapers and users of one exporter.
const CACHE_ENTRIES: usize = 1024;

/// The configured users and the cache of verified credentials.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Checked for unknown users, with the cost of the configured hashes,
    /// so a miss takes as long as a wrong password.
    dummy_hash: String,
    /// Keys the cache entries: an HMAC of user, hash and password under a
    /// key that lives only in this process, so the cache holds no
    /// plaintext and nothing that can be checked offline.
    cache_key: hmac::Key,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // User names only: hashes stay out of logs.
        f.debug_struct("BasicAuth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The outcome of checking an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    Allowed,
    Denied,
}

impl BasicAuth {
    /// Checks every hash now, so a malformed one is a configuration error
    /// naming the user rather than a 401 for everyone at scrape time.
    pub fn new(users: BTreeMap<String, String>) -> Result<Self, String> {
        let mut cost = None;
        for (user, hash) in &users {
            let parts: bcrypt::HashParts = hash.parse().map_err(|e| {
                format!("basic_auth_users.{user}: not a bcrypt hash ({e}); create one with `htpasswd -nBC 10 {user}`")
            })?;
            cost = Some(cost.map_or(parts.get_cost(), |c: u32| c.max(parts.get_cost())));
        }
        let dummy_hash = match cost {
            Some(cost) => bcrypt::hash("steward-unknown-user", cost)
                .map_err(|e| format!("basic_auth_users: {e}"))?,
            None => String::new(),
        };
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| "basic_auth_users: no randomness for the credential cache".to_string())?;
        Ok(BasicAuth {
            users,
            dummy_hash,
            cache_key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            verified: Mutex::new(HashSet::new()),
        })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// True when these credentials were verified before: no bcrypt, so the
    /// caller can skip moving the check off the async workers.
    pub fn is_cached(&self, authorization: Option<&[u8]>) -> bool {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return false;
        };
        match self.users.get(&user) {
            Some(hash) => self.cached(&self.entry_key(&user, hash, &password)),
            None => false,
        }
    }

    /// Checks an `Authorization` header value. Runs bcrypt: call it off the
    /// async workers (`spawn_blocking`) or accept a blocked worker.
    pub fn check(&self, authorization: Option<&[u8]>) -> AuthResult {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return AuthResult::Denied;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy_hash.as_str(), false),
        };
        let key = self.entry_key(&user, hash, &password);
        if known && self.cached(&key) {
            return AuthResult::Allowed;
        }
        let matches = bcrypt::verify(&password, hash).unwrap_or(false);
        if known && matches {
            self.remember(key);
            AuthResult::Allowed
        } else {
            AuthResult::Denied
        }
    }

    fn entry_key(&self, user: &str, hash: &str, password: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.cache_key);
        // Lengths first, so ("ab","c") and ("a","bc") differ.
        for part in [user, hash, password] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        match self.verified.lock() {
            Ok(set) => set.contains(key),
            Err(poisoned) => poisoned.into_inner().contains(key),
        }
    }

    fn remember(&self, key: [u8; 32]) {
        let mut set = match self.verified.lock() {
            Ok(set) => set,
            Err(poisoned) => poisoned.into_inner(),
        };
        if set.len() >= CACHE_ENTRIES {
            set.clear();
        }
        set.insert(key);
    }
}

/// `Basic base64(user:password)` -> (user, password).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
        .into_bytes()
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        BasicAuth::new(BTreeMap::from([("prom".to_string(), hash)])).unwrap()
    }

    #[test]
    fn checks_user_and_password() {
        let a = auth();
        assert_eq!(
            a.check(Some(&header("prom", "s3cret"))),
            AuthResult::Allowed
        );
        // Second time from the cache.
        assert_eq!(
            a.check(Some(&header("prom", "s3cret"))),
            AuthResult::Allowed
        );
        assert_eq!(a.check(Some(&header("prom", "wrong"))), AuthResult::Denied);
        assert_eq!(
            a.check(Some(&header("other", "s3cret"))),
            AuthResult::Denied
        );
        assert_eq!(a.check(None), AuthResult::Denied);
        assert_eq!(a.check(Some(b"Bearer x")), AuthResult::Denied);
        assert_eq!(a.check(Some(b"Basic !!!")), AuthResult::Denied);
        assert_eq!(a.verified.lock().unwrap().len(), 1);
    }

    #[test]
    fn unknown_users_pay_a_bcrypt_of_the_configured_cost() {
        let a = auth();
        assert_eq!(
            a.dummy_hash
                .parse::<bcrypt::HashParts>()
                .unwrap()
                .get_cost(),
            4
        );
        assert!(bcrypt::verify("steward-unknown-user", &a.dummy_hash).unwrap());
    }

    #[test]
    fn malformed_hash_names_the_user() {
        let e = BasicAuth::new(BTreeMap::from([("alice".to_string(), "plain".to_string())]))
            .unwrap_err();
        assert!(
            e.starts_with("basic_auth_users.alice: not a bcrypt hash"),
            "{e}"
        );
    }
}
