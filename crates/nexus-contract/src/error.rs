//! Errors with a place in the contract file.

use std::fmt;

/// One problem in a contract, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ContractError {
    /// The file name the contract was read from (as given to the parser).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, and what was expected.
    pub message: String,
}

/// Every problem found in a contract (at least one), in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ContractErrors(pub Vec<ContractError>);

impl fmt::Display for ContractErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets of one source text to lines and columns.
#[derive(Debug, Clone)]
pub(crate) struct SourceMap<'a> {
    file: &'a str,
    src: &'a str,
}

impl<'a> SourceMap<'a> {
    pub(crate) fn new(file: &'a str, src: &'a str) -> Self {
        Self { file, src }
    }

    pub(crate) fn src(&self) -> &'a str {
        self.src
    }

    /// The error at byte `offset` (clamped to the text).
    pub(crate) fn error(&self, offset: usize, message: impl Into<String>) -> ContractError {
        let mut offset = offset.min(self.src.len());
        while !self.src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        ContractError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }
}
