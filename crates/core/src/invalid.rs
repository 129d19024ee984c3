/// Why a value was refused: a stable machine-readable `code` and a sentence for people.
///
/// The API adds the field name; the rest of the code only needs to know that the value is bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}
