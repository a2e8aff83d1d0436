//! Query parameters shared by the handlers, checked with messages that name them.

use serde::Deserialize;

use crate::{Result, ServingConfig, ServingError};

#[derive(Debug, Deserialize)]
pub(super) struct KQuery {
    /// Kept as text so a bad value gets a message naming `k`.
    pub(super) k: Option<String>,
    /// Comma-separated item ids never to return.
    pub(super) exclude: Option<String>,
    pub(super) category: Option<String>,
}

pub(super) fn parse_k(raw: Option<&str>, cfg: &ServingConfig) -> Result<usize> {
    let Some(raw) = raw else {
        return Ok(cfg.default_k);
    };
    let max = cfg.max_k;
    match raw.trim().parse::<usize>() {
        Ok(k) if (1..=max).contains(&k) => Ok(k),
        Ok(k) => Err(ServingError::BadRequest(format!(
            "k must be between 1 and {max}, got {k}"
        ))),
        Err(_) => Err(ServingError::BadRequest(format!(
            "k must be an integer between 1 and {max}, got {raw:?}"
        ))),
    }
}

pub(super) fn check_id(id: &str, what: &str) -> Result<()> {
    if id.is_empty() || id.len() > recsys_schemas::event::MAX_ID_BYTES {
        return Err(ServingError::BadRequest(format!(
            "{what} must be 1..={} bytes",
            recsys_schemas::event::MAX_ID_BYTES
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_rules() {
        let cfg = ServingConfig::default();
        assert_eq!(parse_k(None, &cfg).unwrap(), 10);
        assert_eq!(parse_k(Some("7"), &cfg).unwrap(), 7);
        for bad in ["0", "101", "abc", "-1", "1.5", ""] {
            let err = parse_k(Some(bad), &cfg).unwrap_err().to_string();
            assert!(err.contains('k'), "{bad}: {err}");
        }
    }
}
