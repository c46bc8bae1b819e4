//! The operator's errors. Each names the operation and the object.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("applying {kind} {namespace}/{name}")]
    Apply {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading {kind} {namespace}/{name}")]
    Get {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {namespace}/{name}")]
    Delete {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of PostgresInstance {namespace}/{name}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("PostgresInstance without {0}")]
    MissingMetadata(&'static str),
    #[error("finalizer of PostgresInstance")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Get { .. } => "get",
            Error::Delete { .. } => "delete",
            Error::Status { .. } => "status",
            Error::MissingMetadata(_) => "metadata",
            Error::Finalizer(_) => "finalizer",
        }
    }
}
