//! API keys: which tenant a bearer key belongs to and what it may do.
//!
//! Plain keys from the environment
//! (`tenant:key[:kind]`) are kept in memory and compared in constant time against every
//! configured key, so timing does not reveal how much of a key matched. A keyring with no
//! keys is "open": every request is tenant `default` (loopback-only servers).

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
}

struct KeyEntry {
    key: Vec<u8>,
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
        self.entries.push(KeyEntry {
            key: key.as_bytes().to_vec(),
            principal: Principal {
                tenant: tenant.to_string(),
                kind,
            },
        });
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
            });
        }
        let header = authorization.ok_or(AuthError::Missing)?;
        let presented = header
            .strip_prefix(b"Bearer ")
            .or_else(|| header.strip_prefix(b"bearer "))
            .ok_or(AuthError::Missing)?;
        // Compare against every key, without an early exit, so timing does not depend on
        // which key (if any) matched.
        let mut found: Option<&Principal> = None;
        for entry in &self.entries {
            let equal = entry.key.len() == presented.len()
                && bool::from(entry.key.as_slice().ct_eq(presented));
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
