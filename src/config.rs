//! The all-in-one configuration: every section of the file. Loading (defaults, then the
//! TOML file, then `RECSYS__SECTION__KEY` variables) is `recsys_schemas::config`; each
//! section is validated at start-up with a message naming the key.

use std::path::Path;

use anyhow::bail;
use recsys_engine::device::Backend;
use recsys_engine::model::ModelConfig;
use recsys_index::IndexConfig;
use recsys_schemas::{EventLimits, KafkaConfig};
use recsys_serving::{ServingConfig, StoreConfig};
use recsys_trainer::TrainerConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub compute: ComputeConfig,
    /// Bounds on an event's weight and time, enforced wherever events enter.
    pub events: EventLimits,
    pub index: IndexConfig,
    /// librdkafka properties for every Kafka client (`security.protocol`, `sasl.*`, ...).
    pub kafka: KafkaConfig,
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

impl Config {
    /// Defaults, overlaid by `file` (if given), overlaid by `RECSYS__*` variables from
    /// `env`, then validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let cfg: Config = recsys_schemas::config::load_layered(file, env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        self.model.validate()?;
        self.index.validate()?;
        self.events.validate()?;
        self.trainer.validate()?;
        self.serving.validate()?;
        recsys_serving::kafka::check(&self.kafka)?;
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
    fn env_values_keep_the_type_of_their_key() {
        let cfg = Config::load(
            None,
            env(&[
                ("RECSYS__TRAINER__GROUP_ID", "123"),
                ("RECSYS__TRAINER__TOPIC", "true"),
                ("RECSYS__TRAINER__BATCH_SIZE", "64"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.trainer.group_id, "123");
        assert_eq!(cfg.trainer.topic, "true");
        assert_eq!(cfg.trainer.batch_size, 64);
    }

    #[test]
    fn event_bounds_are_a_section_of_their_own() {
        let cfg = Config::load(
            None,
            env(&[
                ("RECSYS__EVENTS__MAX_WEIGHT", "10"),
                ("RECSYS__EVENTS__MAX_AGE_S", "0"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.events.max_weight, 10.0);
        assert_eq!(cfg.events.max_age_s, 0);
        let err = Config::load(None, env(&[("RECSYS__EVENTS__MAX_WEIGHT", "-1")])).unwrap_err();
        assert!(format!("{err:#}").contains("events.max_weight"), "{err:#}");
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
