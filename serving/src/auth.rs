//! API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`, checked against the
//! configured keys in constant time (every configured key is compared in full, so the
//! time does not depend on which key matched or how much of it). Keys are never logged.
//!
//! Roles nest: an admin key may do what a write key may, a write key what a read key may.
//! With no key configured at all, auth is off; the server then refuses to listen on
//! anything but loopback.

use actix_web::HttpRequest;
use serde::{Deserialize, Deserializer, Serialize};

use crate::ServingError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

/// `[serving.auth]`. Each list also accepts one comma-separated string, so
/// `RECSYS__SERVING__AUTH__READ=k1,k2` works.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(deserialize_with = "list")]
    pub read: Vec<String>,
    #[serde(deserialize_with = "list")]
    pub write: Vec<String>,
    #[serde(deserialize_with = "list")]
    pub admin: Vec<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: keys never reach a log line.
        f.debug_struct("AuthConfig")
            .field("read", &self.read.len())
            .field("write", &self.write.len())
            .field("admin", &self.admin.len())
            .finish()
    }
}

fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

impl AuthConfig {
    pub fn enabled(&self) -> bool {
        !(self.read.is_empty() && self.write.is_empty() && self.admin.is_empty())
    }

    pub fn validate(&self) -> Result<(), ServingError> {
        for (name, keys) in [
            ("read", &self.read),
            ("write", &self.write),
            ("admin", &self.admin),
        ] {
            if keys.iter().any(|k| k.len() < 16) {
                return Err(ServingError::Config(format!(
                    "serving.auth.{name}: keys must be at least 16 characters"
                )));
            }
        }
        Ok(())
    }

    /// The strongest role of the request's key. Errors: 401 without a key or with an
    /// unknown one.
    pub fn role_of(&self, req: &HttpRequest) -> Result<Role, ServingError> {
        let presented = presented_key(req).ok_or_else(|| {
            ServingError::Unauthorized(
                "an API key is required (Authorization: Bearer <key> or X-API-Key)".into(),
            )
        })?;
        let mut role = None;
        for (r, keys) in [
            (Role::Read, &self.read),
            (Role::Write, &self.write),
            (Role::Admin, &self.admin),
        ] {
            // No early exit: every key is compared.
            if keys.iter().fold(false, |hit, k| {
                hit | constant_time_eq(k.as_bytes(), presented)
            }) {
                role = Some(r);
            }
        }
        role.ok_or_else(|| ServingError::Unauthorized("the API key is not valid".into()))
    }

    /// Allows the request if auth is off or its key has at least `needed`.
    pub fn require(&self, req: &HttpRequest, needed: Role) -> Result<(), ServingError> {
        if !self.enabled() {
            return Ok(());
        }
        let role = self.role_of(req)?;
        if role < needed {
            return Err(ServingError::Forbidden(format!(
                "this API key may not do this (needs a {needed:?} key)"
            )));
        }
        Ok(())
    }
}

fn presented_key(req: &HttpRequest) -> Option<&[u8]> {
    let headers = req.headers();
    if let Some(v) = headers.get(actix_web::http::header::AUTHORIZATION) {
        let v = v.as_bytes();
        let prefix = b"Bearer ";
        if v.len() > prefix.len() && v[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return Some(&v[prefix.len()..]);
        }
    }
    headers.get("x-api-key").map(|v| v.as_bytes())
}

/// Equal contents, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn cfg() -> AuthConfig {
        AuthConfig {
            read: vec!["read-key-0123456789".into()],
            write: vec!["write-key-0123456789".into()],
            admin: vec![],
        }
    }

    #[test]
    fn roles_nest_and_headers_both_work() {
        let c = cfg();
        let bearer = TestRequest::default()
            .insert_header(("Authorization", "Bearer write-key-0123456789"))
            .to_http_request();
        assert_eq!(c.role_of(&bearer).unwrap(), Role::Write);
        c.require(&bearer, Role::Read).unwrap();
        let x = TestRequest::default()
            .insert_header(("X-API-Key", "read-key-0123456789"))
            .to_http_request();
        c.require(&x, Role::Read).unwrap();
        assert!(matches!(
            c.require(&x, Role::Write),
            Err(ServingError::Forbidden(_))
        ));
        for bad in [
            TestRequest::default().to_http_request(),
            TestRequest::default()
                .insert_header(("X-API-Key", "read-key-012345678"))
                .to_http_request(),
            TestRequest::default()
                .insert_header(("Authorization", "Basic read-key-0123456789"))
                .to_http_request(),
        ] {
            assert!(matches!(
                c.require(&bad, Role::Read),
                Err(ServingError::Unauthorized(_))
            ));
        }
        // Off when no key is configured.
        AuthConfig::default()
            .require(&TestRequest::default().to_http_request(), Role::Admin)
            .unwrap();
    }

    #[test]
    fn comparison_and_config() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"\xff"));
        let parsed: AuthConfig =
            toml::from_str("read = \"k1-0123456789abcdef, k2-0123456789abcdef\"").unwrap();
        assert_eq!(parsed.read.len(), 2);
        assert!(format!("{parsed:?}").contains("read: 2"));
        assert!(!format!("{parsed:?}").contains("k1"));
        let short = AuthConfig {
            admin: vec!["short".into()],
            ..AuthConfig::default()
        };
        assert!(
            short
                .validate()
                .unwrap_err()
                .to_string()
                .contains("serving.auth.admin")
        );
    }
}
