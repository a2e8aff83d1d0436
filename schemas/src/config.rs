//! The layered configuration every recsys process reads: compiled-in defaults, then a
//! TOML file, then environment variables `RECSYS__SECTION__KEY=value` (`__` separates
//! nested sections and the key). Unknown keys are errors naming the key; each process
//! validates the sections it uses after loading.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, SchemaError};

/// Prefix of configuration environment variables, e.g.
/// `RECSYS__SERVING__FOLLOW__SNAPSHOT_DIR`.
pub const ENV_PREFIX: &str = "RECSYS__";

/// `T::default()`, overlaid by `file` (if given), overlaid by the `RECSYS__*` variables of
/// `env`. `T` should deny unknown fields, so a misspelt key fails here, by name.
pub fn load_layered<T: Serialize + DeserializeOwned + Default>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T> {
    let bad = |m: String| SchemaError::Config(m);
    let mut merged = match toml::Value::try_from(T::default()) {
        Ok(toml::Value::Table(t)) => t,
        Ok(_) => return Err(bad("defaults did not serialise to a table".into())),
        Err(e) => return Err(bad(format!("defaults: {e}"))),
    };
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("reading config file {}: {e}", path.display())))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| bad(format!("parsing config file {}: {e}", path.display())))?;
        merge(&mut merged, table);
    }
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            return Err(bad(format!(
                "environment variable {name}: expected {ENV_PREFIX}SECTION__KEY"
            )));
        }
        let (key, sections) = path.split_last().unwrap_or((&path[0], &[]));
        let mut table = &mut merged;
        for section in sections {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(inner) = entry.as_table_mut() else {
                return Err(bad(format!(
                    "environment variable {name}: `{section}` is not a section"
                )));
            };
            table = inner;
        }
        // A key whose default is a string stays a string (`GROUP_ID=123`); elsewhere the
        // value is typed as TOML would type it.
        let typed = match table.get(key.as_str()) {
            Some(toml::Value::String(_)) => toml::Value::String(value),
            _ => scalar(&value),
        };
        table.insert(key.clone(), typed);
    }
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e| bad(format!("configuration: {e}")))
}

/// An environment value as TOML: numbers and booleans typed, anything else a string.
fn scalar(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)),
            ) => v,
            _ => toml::Value::String(raw.to_owned()),
        },
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

/// PEM material for a TLS client (the `rediss://` user store): a CA bundle to trust
/// instead of the system's roots, and a client certificate with its key for servers that
/// ask for one. Read once at start-up; the error names the key.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsPem {
    pub ca: Option<Vec<u8>>,
    /// (certificate chain, private key)
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsPem")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl TlsPem {
    /// Reads the files named by `(key, path)` pairs of a section (`section.tls_ca_file`,
    /// `section.tls_cert_file`, `section.tls_key_file`); empty paths are unset. A
    /// certificate without its key, or the reverse, is an error.
    pub fn load(section: &str, ca_file: &str, cert_file: &str, key_file: &str) -> Result<Self> {
        let read = |key: &str, path: &str| -> Result<Option<Vec<u8>>> {
            if path.is_empty() {
                return Ok(None);
            }
            let bytes = std::fs::read(path).map_err(|e| {
                SchemaError::Config(format!("{section}.{key}: reading {path}: {e}"))
            })?;
            if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
                return Err(SchemaError::Config(format!(
                    "{section}.{key}: {path} is not PEM"
                )));
            }
            Ok(Some(bytes))
        };
        let ca = read("tls_ca_file", ca_file)?;
        let client = match (
            read("tls_cert_file", cert_file)?,
            read("tls_key_file", key_file)?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(SchemaError::Config(format!(
                    "{section}.tls_key_file: must be set with tls_cert_file"
                )));
            }
            (None, Some(_)) => {
                return Err(SchemaError::Config(format!(
                    "{section}.tls_cert_file: must be set with tls_key_file"
                )));
            }
        };
        Ok(Self { ca, client })
    }
}
