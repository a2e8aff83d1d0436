//! Layered configuration: compiled-in defaults, then a TOML file, then environment
//! variables `RECSYS__SECTION__KEY=value`. Unknown keys are errors, and every section is
//! validated at start-up with a message naming the key.

use std::path::Path;

use anyhow::{Context, bail};
use recsys_engine::device::Backend;
use recsys_engine::index::IndexConfig;
use recsys_engine::model::ModelConfig;
use recsys_serving::ServingConfig;
use recsys_trainer::TrainerConfig;
use serde::{Deserialize, Serialize};

/// Prefix of configuration environment variables; `__` separates sections and the key,
/// e.g. `RECSYS__SERVING__FOLLOW__SNAPSHOT_DIR`.
pub const ENV_PREFIX: &str = "RECSYS__";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub compute: ComputeConfig,
    pub index: IndexConfig,
    pub trainer: TrainerConfig,
    pub serving: ServingConfig,
    pub store: StoreConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComputeConfig {
    /// `cpu` (burn-flex), `ndarray` (burn-ndarray) or `cuda` (needs `--features cuda`).
    pub backend: Backend,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Redis URL for user vectors and histories, e.g. `redis://127.0.0.1:6379`. Empty:
    /// an in-memory store inside the process (all-in-one mode only).
    pub redis_url: String,
}

impl Config {
    /// Defaults, overlaid by `file` (if given), overlaid by `RECSYS__*` variables from
    /// `env`, then validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut merged = match toml::Value::try_from(Config::default()).context("defaults")? {
            toml::Value::Table(t) => t,
            _ => bail!("defaults did not serialise to a table"),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            merge(&mut merged, table);
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
            if path.len() < 2 || path.iter().any(String::is_empty) {
                bail!("environment variable {name}: expected {ENV_PREFIX}SECTION__KEY");
            }
            let (key, sections) = path.split_last().unwrap_or((&path[0], &[]));
            let mut table = &mut merged;
            for section in sections {
                let entry = table
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let Some(inner) = entry.as_table_mut() else {
                    bail!("environment variable {name}: `{section}` is not a section");
                };
                table = inner;
            }
            table.insert(key.clone(), scalar(&value));
        }
        let cfg: Config = toml::Value::Table(merged)
            .try_into()
            .context("configuration")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.model.validate()?;
        self.index.validate()?;
        self.trainer.validate()?;
        self.serving.validate()?;
        if self.trainer.generation != self.serving.generation {
            bail!(
                "serving.generation: {} differs from trainer.generation {} in one process",
                self.serving.generation,
                self.trainer.generation
            );
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_file_then_env() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "[trainer]\nbatch_size = 256\n[model.mf]\ndim = 32").unwrap();
        let cfg = Config::load(
            Some(f.path()),
            env(&[("RECSYS__TRAINER__BATCH_SIZE", "512"), ("OTHER", "x")]),
        )
        .unwrap();
        assert_eq!(cfg.trainer.batch_size, 512);
        assert_eq!(cfg.model.mf.dim, 32);
        assert_eq!(cfg.serving.max_k, ServingConfig::default().max_k);
    }

    #[test]
    fn env_reaches_nested_sections() {
        let cfg =
            Config::load(None, env(&[("RECSYS__SERVING__FOLLOW__APPLY_BATCH", "77")])).unwrap();
        assert_eq!(cfg.serving.follow.apply_batch, 77);
        let err = Config::load(None, env(&[("RECSYS__SERVING__MAX_K__X", "1")])).unwrap_err();
        assert!(
            format!("{err:#}").contains("`max_k` is not a section"),
            "{err:#}"
        );
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::load(None, env(&[("RECSYS__SERVING__MAX_KK", "5")])).unwrap_err();
        assert!(format!("{err:#}").contains("max_kk"), "{err:#}");
    }

    #[test]
    fn invalid_value_is_named() {
        let err = Config::load(None, env(&[("RECSYS__SERVING__MAX_K", "0")])).unwrap_err();
        assert!(format!("{err:#}").contains("serving.max_k"), "{err:#}");
        let err = Config::load(None, env(&[("RECSYS__MODEL__MF__DIM", "many")])).unwrap_err();
        assert!(format!("{err:#}").contains("dim"), "{err:#}");
    }

    #[test]
    fn example_config_in_deploy_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/recsys.example.toml");
        Config::load(Some(&path), Vec::new()).unwrap();
    }
}
