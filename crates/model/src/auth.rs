//! API keys: which tenant a bearer key belongs to and what it may do.
//!
//! Keys are held only as SHA-256 digests: the config file carries digests
//! ([`KeySection`], its `[[keys]]` with `tenant`, `sha256`, `kind`), and plain keys from the environment
//! (`AIS_API_KEYS=tenant:key[:kind],…`) are hashed as they are read. A presented key is
//! hashed once and compared in constant time against every configured digest, so
//! timing reveals neither which key matched nor how much of one. Several keys may map
//! to one tenant (rotation). A keyring with no keys is "open": every request is tenant
//! `default` (loopback-only servers). Nothing here prints a key or a digest.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do (DESIGN.md, "Tenants and keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Ingest and read its own tenant.
    All,
    /// Ingest only.
    Write,
    /// Queries and dashboard only.
    Read,
    /// Read any tenant.
    Admin,
}

impl KeyKind {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "all" => Some(Self::All),
            "write" => Some(Self::Write),
            "read" => Some(Self::Read),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Write => "write",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }

    pub fn can_ingest(self) -> bool {
        matches!(self, Self::All | Self::Write)
    }

    pub fn can_read(self) -> bool {
        matches!(self, Self::All | Self::Read | Self::Admin)
    }
}

/// The caller of a request, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub kind: KeyKind,
    /// How usage names the key: its configured `name`, else [`key_label`] of its digest;
    /// `None` for the open keyring's requests.
    pub key: Option<String>,
}

/// A key's short id when it has no name: `k-` and 12 hex digits of a second SHA-256 over
/// its stored digest, so neither the key nor its digest can be read back from it, and
/// the same key has the same id in every process that holds it.
pub fn key_label(digest: &[u8; 32]) -> String {
    let second: [u8; 32] = Sha256::digest(digest).into();
    format!("k-{}", to_hex(&second[..6]))
}

/// The tenant of every request when no key is configured.
pub const DEFAULT_TENANT: &str = "default";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing API key: send Authorization: Bearer <key>")]
    Missing,
    #[error("unknown API key")]
    Unknown,
    #[error("this key may not {action}; use a key of kind {needed}")]
    WrongKind {
        action: &'static str,
        needed: &'static str,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeySpecError {
    #[error("API key entry {index} must be tenant:key or tenant:key:kind")]
    Shape { index: usize },
    #[error("API key entry {index} has an empty tenant or key")]
    Empty { index: usize },
    #[error("API key entry {index} has a tenant longer than {max} bytes")]
    TenantTooLong { index: usize, max: usize },
    #[error("API key entry {index} has unknown kind {kind:?}; use all, write, read or admin")]
    Kind { index: usize, kind: String },
    #[error("API key entry {index}: name must be 1 to {max} bytes")]
    Name { index: usize, max: usize },
    #[error("API key entry {index}: sha256 must be 64 hex digits")]
    Digest { index: usize },
}

/// SHA-256 of a key.
pub fn key_digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xF)]));
    }
    out
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (index, pair) in hex.chunks_exact(2).enumerate() {
        out[index] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// One `[[keys]]` entry of the config file: a key's SHA-256, never the key
/// (`ais keys new` prints both). Checked as it joins a [`Keyring`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub tenant: String,
    /// 64 hex digits, either case.
    pub sha256: String,
    /// all (the default), write, read or admin.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// What usage calls this key (scope `key`); without it, a short id derived from the
    /// digest ([`key_label`]).
    #[serde(default)]
    pub name: Option<String>,
}

fn default_kind() -> String {
    "all".to_string()
}

impl std::fmt::Debug for KeySection {
    // Never print digests.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeySection")
            .field("tenant", &self.tenant)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

struct KeyEntry {
    digest: [u8; 32],
    principal: Principal,
}

/// The configured keys.
#[derive(Default)]
pub struct Keyring {
    entries: Vec<KeyEntry>,
}

impl std::fmt::Debug for Keyring {
    // Never print keys.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Keyring")
            .field("keys", &self.entries.len())
            .finish()
    }
}

impl Keyring {
    /// Parses `tenant:key[:kind],…` (the `AIS_API_KEYS` form). Blank input gives an open
    /// keyring.
    pub fn parse_plain(spec: &str) -> Result<Self, KeySpecError> {
        let mut keyring = Self::default();
        for (index, item) in spec
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .enumerate()
        {
            let parts: Vec<&str> = item.split(':').collect();
            let (tenant, key, kind) = match parts.as_slice() {
                [tenant, key] => (*tenant, *key, KeyKind::All),
                [tenant, key, kind] => (
                    *tenant,
                    *key,
                    KeyKind::parse(kind).ok_or_else(|| KeySpecError::Kind {
                        index,
                        kind: (*kind).to_string(),
                    })?,
                ),
                _ => return Err(KeySpecError::Shape { index }),
            };
            if tenant.is_empty() || key.is_empty() {
                return Err(KeySpecError::Empty { index });
            }
            if tenant.len() > crate::event::limits::TENANT_BYTES {
                return Err(KeySpecError::TenantTooLong {
                    index,
                    max: crate::event::limits::TENANT_BYTES,
                });
            }
            keyring.add(tenant, key, kind);
        }
        Ok(keyring)
    }

    pub fn add(&mut self, tenant: &str, key: &str, kind: KeyKind) {
        self.add_digest(tenant, key_digest(key), kind, None);
    }

    fn add_digest(&mut self, tenant: &str, digest: [u8; 32], kind: KeyKind, name: Option<&str>) {
        let key = name.map_or_else(|| key_label(&digest), str::to_string);
        self.entries.push(KeyEntry {
            digest,
            principal: Principal {
                tenant: tenant.to_string(),
                kind,
                key: Some(key),
            },
        });
    }

    /// Adds a `[[keys]]` entry of the config file: the key's SHA-256 in hex. `index`
    /// names the entry in errors.
    pub fn add_hashed(
        &mut self,
        index: usize,
        tenant: &str,
        sha256_hex: &str,
        kind: &str,
        name: Option<&str>,
    ) -> Result<(), KeySpecError> {
        if name.is_some_and(|name| name.is_empty() || name.len() > crate::event::limits::KEY_BYTES)
        {
            return Err(KeySpecError::Name {
                index,
                max: crate::event::limits::KEY_BYTES,
            });
        }
        if tenant.is_empty() {
            return Err(KeySpecError::Empty { index });
        }
        if tenant.len() > crate::event::limits::TENANT_BYTES {
            return Err(KeySpecError::TenantTooLong {
                index,
                max: crate::event::limits::TENANT_BYTES,
            });
        }
        let kind = KeyKind::parse(kind).ok_or_else(|| KeySpecError::Kind {
            index,
            kind: kind.to_string(),
        })?;
        let digest = parse_digest(sha256_hex).ok_or(KeySpecError::Digest { index })?;
        self.add_digest(tenant, digest, kind, name);
        Ok(())
    }

    /// Adds the config file's `[[keys]]` entries; an error names the entry by its
    /// position among them, from 0.
    pub fn add_sections(&mut self, sections: &[KeySection]) -> Result<(), KeySpecError> {
        for (index, section) in sections.iter().enumerate() {
            self.add_hashed(
                index,
                &section.tenant,
                &section.sha256,
                &section.kind,
                section.name.as_deref(),
            )?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// No keys configured: every request is the default tenant.
    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    /// Resolves the `Authorization` header value (if any) to a principal.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        if self.is_open() {
            return Ok(Principal {
                tenant: DEFAULT_TENANT.to_string(),
                kind: KeyKind::All,
                key: None,
            });
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let presented = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(AuthError::Missing)?;
        let presented: [u8; 32] = Sha256::digest(presented).into();
        // Compare against every digest, without an early exit, so timing does not
        // depend on which key (if any) matched.
        let mut found: Option<&Principal> = None;
        for entry in &self.entries {
            let equal = bool::from(entry.digest.ct_eq(&presented));
            if equal && found.is_none() {
                found = Some(&entry.principal);
            }
        }
        found.cloned().ok_or(AuthError::Unknown)
    }

    /// Authenticates and checks the key may ingest.
    pub fn authorize_ingest(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let principal = self.authenticate(authorization)?;
        if !principal.kind.can_ingest() {
            return Err(AuthError::WrongKind {
                action: "ingest",
                needed: "all or write",
            });
        }
        Ok(principal)
    }

    /// Authenticates and checks the key may read.
    pub fn authorize_read(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let principal = self.authenticate(authorization)?;
        if !principal.kind.can_read() {
            return Err(AuthError::WrongKind {
                action: "read",
                needed: "all, read or admin",
            });
        }
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_resolve_to_their_tenant_and_kind() {
        let keyring =
            Keyring::parse_plain("acme:k1, globex:k2:read ,ops:k3:admin").expect("valid spec");
        let acme = keyring.authenticate(Some(b"Bearer k1")).expect("k1 known");
        assert_eq!(acme.tenant, "acme");
        assert_eq!(acme.kind, KeyKind::All);
        assert_eq!(
            keyring.authorize_ingest(Some(b"Bearer k2")),
            Err(AuthError::WrongKind {
                action: "ingest",
                needed: "all or write"
            })
        );
        assert_eq!(
            keyring.authorize_read(Some(b"Bearer k3")).map(|p| p.kind),
            Ok(KeyKind::Admin)
        );
        assert_eq!(
            keyring.authenticate(Some(b"Bearer k")),
            Err(AuthError::Unknown)
        );
        assert_eq!(keyring.authenticate(Some(b"k1")), Err(AuthError::Missing));
        assert_eq!(keyring.authenticate(None), Err(AuthError::Missing));
    }

    #[test]
    fn hashed_entries_match_their_key_and_rotation_keeps_both() {
        let mut keyring = Keyring::default();
        let old = to_hex(&key_digest("old-key"));
        let new = to_hex(&key_digest("new-key")).to_uppercase();
        keyring
            .add_hashed(0, "acme", &old, "write", None)
            .expect("valid entry");
        keyring
            .add_hashed(1, "acme", &new, "all", None)
            .expect("upper-case hex is fine");
        assert_eq!(
            keyring
                .authenticate(Some(b"Bearer old-key"))
                .map(|p| p.kind),
            Ok(KeyKind::Write)
        );
        assert_eq!(
            keyring
                .authenticate(Some(b"Bearer new-key"))
                .map(|p| p.tenant),
            Ok("acme".to_string())
        );
        assert_eq!(
            keyring.authenticate(Some(old.as_bytes())),
            Err(AuthError::Missing)
        );
        let bearer_digest = format!("Bearer {old}");
        assert_eq!(
            keyring.authenticate(Some(bearer_digest.as_bytes())),
            Err(AuthError::Unknown),
            "the digest is not a key"
        );
        assert_eq!(
            keyring.add_hashed(2, "acme", "abc", "all", None),
            Err(KeySpecError::Digest { index: 2 })
        );
        assert_eq!(
            keyring.add_hashed(3, "acme", &"g".repeat(64), "all", None),
            Err(KeySpecError::Digest { index: 3 })
        );
        assert!(matches!(
            keyring.add_hashed(4, "acme", &old, "root", None),
            Err(KeySpecError::Kind { .. })
        ));
        assert_eq!(keyring.len(), 2);
        assert!(
            !format!("{keyring:?}").contains(&old[..8]),
            "Debug shows no digest"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        keys: Vec<KeySection>,
    }

    fn sections(text: &str) -> Vec<KeySection> {
        toml::from_str::<File>(text).expect("parses").keys
    }

    #[test]
    fn key_sections_join_the_keyring_with_all_as_the_default_kind() {
        let digest = to_hex(&key_digest("k1"));
        let mut keyring = Keyring::default();
        keyring
            .add_sections(&sections(&format!(
                "[[keys]]\ntenant = \"acme\"\nsha256 = \"{digest}\"\n"
            )))
            .expect("valid entry");
        assert_eq!(
            keyring.authenticate(Some(b"Bearer k1")),
            Ok(Principal {
                tenant: "acme".to_string(),
                kind: KeyKind::All,
                key: Some(key_label(&key_digest("k1"))),
            })
        );
        // A named key is called by its name; an unnamed one by an id that is neither
        // the key nor its digest.
        let label = key_label(&key_digest("k1"));
        assert!(label.starts_with("k-") && label.len() == 14, "{label}");
        assert!(
            !digest.contains(&label[2..]),
            "{label} is not part of the digest"
        );
        let mut named = Keyring::default();
        named
            .add_sections(&sections(&format!(
                "[[keys]]\ntenant = \"acme\"\nsha256 = \"{digest}\"\nname = \"ci\"\n"
            )))
            .expect("valid entry");
        let principal = named.authenticate(Some(b"Bearer k1")).expect("known key");
        assert_eq!(principal.key.as_deref(), Some("ci"));
        assert_eq!(
            named.add_hashed(1, "acme", &digest, "all", Some("")),
            Err(KeySpecError::Name { index: 1, max: 128 })
        );
        let error = toml::from_str::<File>(&format!(
            "[[keys]]\ntenant = \"acme\"\nsha256 = \"{digest}\"\nkey = \"k1\"\n"
        ))
        .expect_err("unknown key");
        assert!(error.to_string().contains("unknown field `key`"), "{error}");
        let section = &sections(&format!(
            "[[keys]]\ntenant = \"acme\"\nsha256 = \"{digest}\"\nkind = \"read\"\n"
        ))[0];
        assert!(
            !format!("{section:?}").contains(&digest[..8]),
            "Debug shows no digest: {section:?}"
        );
    }

    #[test]
    fn a_bad_key_section_is_refused_naming_its_position() {
        let digest = to_hex(&key_digest("k1"));
        let error_of = |second: &str| {
            let text =
                format!("[[keys]]\ntenant = \"acme\"\nsha256 = \"{digest}\"\n[[keys]]\n{second}");
            Keyring::default()
                .add_sections(&sections(&text))
                .expect_err("second entry refused")
                .to_string()
        };
        assert_eq!(
            error_of(&format!("tenant = \"\"\nsha256 = \"{digest}\"\n")),
            "API key entry 1 has an empty tenant or key"
        );
        assert_eq!(
            error_of(&format!(
                "tenant = \"{}\"\nsha256 = \"{digest}\"\n",
                "t".repeat(65)
            )),
            "API key entry 1 has a tenant longer than 64 bytes"
        );
        assert_eq!(
            error_of(&format!(
                "tenant = \"acme\"\nsha256 = \"{digest}\"\nkind = \"root\"\n"
            )),
            "API key entry 1 has unknown kind \"root\"; use all, write, read or admin"
        );
        assert_eq!(
            error_of("tenant = \"acme\"\nsha256 = \"k1\"\n"),
            "API key entry 1: sha256 must be 64 hex digits"
        );
    }

    #[test]
    fn digests_are_the_sha256_of_the_key() {
        // FIPS 180-2 test vector.
        assert_eq!(
            to_hex(&key_digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bad_specs_name_the_entry() {
        assert_eq!(
            Keyring::parse_plain("a:b,c").err(),
            Some(KeySpecError::Shape { index: 1 })
        );
        assert!(matches!(
            Keyring::parse_plain("a:b:root"),
            Err(KeySpecError::Kind { .. })
        ));
        assert!(Keyring::parse_plain("  ").expect("blank is open").is_open());
    }
}
