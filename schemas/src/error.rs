//! The one error type of the schemas crate: why an event, an item message, an
//! item-vector message, an Arrow batch or the configuration was refused. Messages name
//! the offending field or key.

/// Why input was refused. `field` names the offending JSON key or config key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("event is not valid JSON: {0}")]
    Json(String),
    #[error("event must be a JSON object")]
    NotAnObject,
    #[error("field `{field}`: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("item-vector message of {0} bytes is shorter than its 21-byte header")]
    ItemVectorShort(usize),
    #[error("item-vector message has format version {0}, this build reads version 1")]
    ItemVectorVersion(u8),
    #[error("item-vector message says dimension {dim} but carries {bytes} vector bytes")]
    ItemVectorLength { dim: usize, bytes: usize },
    #[error("item-vector message holds a non-finite value")]
    ItemVectorNonFinite,
    /// An Arrow batch does not have the archive's schema, or Arrow failed.
    #[error("arrow: {0}")]
    Arrow(String),
    /// The configuration file or an environment variable is wrong; the message names the
    /// file, the variable or the key.
    #[error("{0}")]
    Config(String),
}

impl SchemaError {
    pub(crate) fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Field {
            field,
            reason: reason.into(),
        }
    }

    /// The JSON key the error is about, if it is about one.
    pub fn field_name(&self) -> Option<&'static str> {
        match self {
            Self::Field { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<arrow_schema::ArrowError> for SchemaError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self::Arrow(e.to_string())
    }
}

pub type Result<T, E = SchemaError> = std::result::Result<T, E>;
