//! The safety policy: tiers, server-enforced confirmation (elicitation or single-use tokens).

use std::time::{Duration, SystemTime};

use ring::hmac;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::state::SharedState;

/// How dangerous a tool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Reads only. Always enabled.
    Read,
    /// Changes state recoverably (apply config, service actions, defragment, image pull).
    Write,
    /// Takes nodes down, removes members, or reads secrets in bulk (snapshots).
    Destructive,
}

impl Tier {
    /// The tier's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Destructive => "destructive",
        }
    }

    /// The flag that enables the tier.
    pub fn flag(self) -> &'static str {
        match self {
            Self::Read => "(always on)",
            Self::Write => "--allow-write (TALOS_MCP_ALLOW_WRITE=true)",
            Self::Destructive => "--allow-destructive (TALOS_MCP_ALLOW_DESTRUCTIVE=true)",
        }
    }
}

/// How write/destructive calls are confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfirmMode {
    /// Ask the human through MCP elicitation when the client supports it, else use tokens.
    #[default]
    Elicit,
    /// Always the two-step token flow.
    Token,
    /// No confirmation (automation only; every call is still audited).
    None,
}

impl std::str::FromStr for ConfirmMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "elicit" => Ok(Self::Elicit),
            "token" => Ok(Self::Token),
            "none" => Ok(Self::None),
            other => Err(format!(
                "confirm mode must be elicit, token or none, not `{other}`"
            )),
        }
    }
}

/// The human's answer in an elicitation form.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
pub(crate) struct ConfirmForm {
    /// Set to true to perform the action.
    pub(crate) confirm: bool,
}

rmcp::elicit_safe!(ConfirmForm);

/// Issues and verifies single-use confirmation tokens.
///
/// A token is `v2.<expiry>.<nonce>.<mac>`: the expiry as 16 lowercase hex digits (Unix seconds),
/// a 128-bit nonce as 32 lowercase hex digits, and an HMAC-SHA256 (64 lowercase hex digits) over
/// a domain tag and every field length-prefixed: the binding (tool, context, node, caller,
/// session and canonical arguments, see `confirm.rs`), the expiry and the nonce. The encoding is
/// canonical: a token that does not re-encode to exactly itself (other case, leading zeros,
/// signs, padding or whitespace) is malformed, so no field can be altered in its encoding. Any
/// server holding the same secret can verify a token (replicas behind a load balancer share the
/// secret); single use is enforced by claiming the nonce in the [`SharedState`] until the
/// token's expiry (in memory for one process, in Redis across replicas).
pub struct TokenIssuer {
    key: hmac::Key,
    ttl: Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this server issued, or issued for another call or caller.
    #[error(
        "the confirmation token does not match this call (tool, context, node and arguments must be identical to the call that issued it, from the same caller and session)"
    )]
    Mismatch,
    /// Past its expiry.
    #[error(
        "the confirmation token has expired; call again without a token to get a new plan and token"
    )]
    Expired,
    /// Used before.
    #[error("the confirmation token was already used; call again without a token to get a new one")]
    Replayed,
    /// Malformed.
    #[error("the confirmation token is malformed")]
    Malformed,
    /// The shared state store could not say whether it was used (fails closed).
    #[error(
        "the confirmation could not be checked for single use (the shared state store did not answer); nothing was done. Retry shortly"
    )]
    Unavailable,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes exactly `len` bytes of lowercase hex; anything else is `None`.
fn unhex(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != 2 * len || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The version tag that starts every token.
const TOKEN_VERSION: &str = "v2";
/// Nonce bytes.
const NONCE_LEN: usize = 16;

/// The canonical text of a token.
fn encode(expiry: u64, nonce: &[u8], mac: &[u8]) -> String {
    format!("{TOKEN_VERSION}.{expiry:016x}.{}.{}", hex(nonce), hex(mac))
}

impl TokenIssuer {
    /// An issuer with `secret` (at least 32 bytes recommended) and token lifetime `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            ttl,
        }
    }

    /// An issuer with a random secret (tokens valid for this process only).
    pub fn random(ttl: Duration) -> Self {
        let mut secret = [0u8; 32];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret);
        Self::new(&secret, ttl)
    }

    /// The token lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The authenticated message: a domain tag, then every field length-prefixed, so no two
    /// different (binding, expiry, nonce) triples share a message.
    fn message(binding: &str, expiry: u64, nonce: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(64 + binding.len());
        m.extend_from_slice(b"talos-mcp confirmation token v2");
        for field in [binding.as_bytes(), &expiry.to_be_bytes(), nonce] {
            m.extend_from_slice(&(field.len() as u64).to_be_bytes());
            m.extend_from_slice(field);
        }
        m
    }

    /// Issues a token bound to `binding` (tool, context, node, caller, session, arguments).
    pub fn issue(&self, binding: &str) -> String {
        self.issue_at(binding, unix_now())
    }

    fn issue_at(&self, binding: &str, now: u64) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
        let expiry = now.saturating_add(self.ttl.as_secs());
        let mac = hmac::sign(&self.key, &Self::message(binding, expiry, &nonce));
        encode(expiry, &nonce, mac.as_ref())
    }

    /// Verifies a token for `binding` and consumes it in `used` (shared by every replica).
    pub async fn redeem(
        &self,
        token: &str,
        binding: &str,
        used: &dyn SharedState,
    ) -> Result<(), TokenError> {
        self.redeem_at(token, binding, unix_now(), used).await
    }

    async fn redeem_at(
        &self,
        token: &str,
        binding: &str,
        now: u64,
        used: &dyn SharedState,
    ) -> Result<(), TokenError> {
        let (nonce, expiry) = self.verify_at(token, binding, now)?;
        // Kept until the token expires (and a second longer, for clock steps between replicas).
        let ttl = Duration::from_secs(expiry.saturating_sub(now).saturating_add(1));
        match used.claim_once(&format!("nonce:{nonce}"), ttl).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(TokenError::Replayed),
            Err(e) => {
                tracing::warn!(error = %e, "the shared state store did not answer a single-use check");
                Err(TokenError::Unavailable)
            }
        }
    }

    /// Checks a token's encoding, MAC and expiry; its nonce (hex) and expiry when it is good.
    fn verify_at(&self, token: &str, binding: &str, now: u64) -> Result<(String, u64), TokenError> {
        let parts: Vec<&str> = token.split('.').collect();
        let [version, expiry_hex, nonce_hex, mac_hex] = parts.as_slice() else {
            return Err(TokenError::Malformed);
        };
        if *version != TOKEN_VERSION {
            return Err(TokenError::Malformed);
        }
        let expiry = unhex(expiry_hex, 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or(TokenError::Malformed)?;
        let nonce = unhex(nonce_hex, NONCE_LEN).ok_or(TokenError::Malformed)?;
        let mac = unhex(mac_hex, 32).ok_or(TokenError::Malformed)?;
        // Only the canonical encoding is accepted.
        if encode(expiry, &nonce, &mac) != token {
            return Err(TokenError::Malformed);
        }
        hmac::verify(&self.key, &Self::message(binding, expiry, &nonce), &mac)
            .map_err(|_| TokenError::Mismatch)?;
        if now > expiry {
            return Err(TokenError::Expired);
        }
        Ok((hex(&nonce), expiry))
    }
}

/// The operator's safety settings.
#[derive(Debug)]
pub struct SafetySettings {
    /// Enables the write tier.
    pub allow_write: bool,
    /// Enables the destructive tier.
    pub allow_destructive: bool,
    /// How calls are confirmed.
    pub confirm: ConfirmMode,
    /// Also confirm write-tier calls (destructive calls are always confirmed unless mode is none).
    pub confirm_writes: bool,
    /// Confirmation tokens.
    pub tokens: TokenIssuer,
}

impl Default for SafetySettings {
    fn default() -> Self {
        Self {
            allow_write: false,
            allow_destructive: false,
            confirm: ConfirmMode::Elicit,
            confirm_writes: false,
            tokens: TokenIssuer::random(Duration::from_secs(300)),
        }
    }
}

impl SafetySettings {
    /// Whether a tier's tools are listed and callable.
    pub fn enabled(&self, tier: Tier) -> bool {
        match tier {
            Tier::Read => true,
            Tier::Write => self.allow_write,
            Tier::Destructive => self.allow_destructive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_are_bound_single_use_and_expire() {
        let issuer = TokenIssuer::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(300),
        );
        let used = crate::state::MemoryState::default();
        let t = issuer.issue_at("reboot|ctx|n1|{}", 1000);
        assert_eq!(
            issuer.redeem_at(&t, "reboot|ctx|n2|{}", 1001, &used).await,
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            issuer.redeem_at(&t, "reboot|ctx|n1|{}", 1301, &used).await,
            Err(TokenError::Expired)
        );
        assert_eq!(
            issuer.redeem_at(&t, "reboot|ctx|n1|{}", 1001, &used).await,
            Ok(())
        );
        assert_eq!(
            issuer.redeem_at(&t, "reboot|ctx|n1|{}", 1002, &used).await,
            Err(TokenError::Replayed)
        );
        assert_eq!(
            issuer.redeem_at("v2.x.y.z", "a", 1, &used).await,
            Err(TokenError::Malformed)
        );
        assert_eq!(
            issuer.redeem_at("garbage", "a", 1, &used).await,
            Err(TokenError::Malformed)
        );
    }

    #[tokio::test]
    async fn replicas_sharing_a_secret_accept_each_others_tokens() {
        let a = TokenIssuer::new(b"shared-secret-shared-secret-1234", Duration::from_secs(60));
        let b = TokenIssuer::new(b"shared-secret-shared-secret-1234", Duration::from_secs(60));
        let c = TokenIssuer::new(b"another-secret-another-secret-12", Duration::from_secs(60));
        // The replicas share the store that keeps single use, too.
        let used = crate::state::MemoryState::default();
        let t = a.issue("x");
        assert_eq!(c.redeem(&t, "x", &used).await, Err(TokenError::Mismatch));
        assert_eq!(b.redeem(&t, "x", &used).await, Ok(()));
        assert_eq!(a.redeem(&t, "x", &used).await, Err(TokenError::Replayed));
    }

    /// Every field is authenticated in one canonical encoding: an altered expiry (another
    /// value, or the same value spelled differently) or a re-spelled nonce or MAC is refused,
    /// and the genuine token still works afterwards (single use is not spent by the attempts).
    #[tokio::test]
    async fn token_fields_are_authenticated_in_one_canonical_encoding() {
        let issuer = TokenIssuer::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(300),
        );
        let used = crate::state::MemoryState::default();
        let t = issuer.issue_at("b", 1000);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 4, "{t}");
        assert_eq!(parts[1], format!("{:016x}", 1300));
        let with = |i: usize, v: &str| {
            let mut p: Vec<String> = parts.iter().map(|s| (*s).to_owned()).collect();
            p[i] = v.to_owned();
            p.join(".")
        };
        let respelled = [
            // The same expiry in other spellings.
            with(1, &format!("0{:016x}", 1300)),
            with(1, &format!("{:x}", 1300)),
            with(1, &format!("+{:015x}", 1300)),
            with(1, &format!("{:016X}", 1300)),
            // The same nonce and MAC in upper case.
            with(2, &parts[2].to_uppercase()),
            with(3, &parts[3].to_uppercase()),
            // Padding and whitespace.
            format!(" {t}"),
            format!("{t}\n"),
            format!("{t}."),
        ];
        for bad in &respelled {
            if bad == &t {
                continue;
            }
            assert_eq!(
                issuer.redeem_at(bad, "b", 1001, &used).await,
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        // A later expiry in canonical form fails the MAC.
        assert_eq!(
            issuer
                .redeem_at(&with(1, &format!("{:016x}", 99_999)), "b", 1001, &used)
                .await,
            Err(TokenError::Mismatch)
        );
        assert_eq!(issuer.redeem_at(&t, "b", 1001, &used).await, Ok(()));
    }
}
