use std::path::PathBuf;

/// The one error type of trireme-policy. Every variant says where the problem is: the file
/// (or the name given to an in-memory source), the object (`namespace/name` and kind) and,
/// for invalid objects, the field path (`spec.ingress[0].ports[1].endPort`).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A document is not well-formed YAML or JSON.
    #[error("{file}: document {doc}: {message}")]
    Syntax {
        file: String,
        /// 1-based index of the document in a multi-document file.
        doc: usize,
        message: String,
    },
    /// A document lacks `apiVersion` or `kind`, or is not a mapping.
    #[error("{file}: document {doc}: {message}")]
    NotAnObject {
        file: String,
        doc: usize,
        message: String,
    },
    /// An object is invalid; `field` is the path of the offending field.
    #[error("{file}: {kind} {object}: {field}: {message}")]
    Invalid {
        file: String,
        kind: String,
        /// `namespace/name` (or just `name` for cluster-scoped objects).
        object: String,
        field: String,
        message: String,
    },
    /// The same object appears twice in the input.
    #[error("{kind} {object} is defined twice: in {first} and in {second}")]
    Duplicate {
        kind: String,
        object: String,
        first: String,
        second: String,
    },
}

/// A problem in one field of an object, before the file/object context is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}
