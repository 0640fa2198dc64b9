//! Agent names and message recipients, validated once, here.
//!
//! Every name that reaches a path, a socket or a command goes through
//! [`AgentName::parse`]; wire types that carry a name to act on use
//! [`AgentName`] directly, so a bad name is refused while the request is
//! still being decoded.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{BROADCAST_RECIPIENT, OPERATOR_RECIPIENT, SYSTEM_SENDER};

/// Longest agent name.
pub const MAX_NAME_LEN: usize = 32;

/// A validated agent name: `^[a-z][a-z0-9-]{0,31}$`, not `operator` or
/// `system`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentName(String);

/// Why a string is not an [`AgentName`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong { len: usize },
    BadStart { name: String },
    BadChar { name: String, ch: char },
    Reserved { name: String },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const RULE: &str = "names match ^[a-z][a-z0-9-]{0,31}$";
        match self {
            NameError::Empty => write!(f, "invalid agent name: empty ({RULE})"),
            NameError::TooLong { len } => {
                write!(
                    f,
                    "invalid agent name: {len} characters, at most {MAX_NAME_LEN} ({RULE})"
                )
            }
            NameError::BadStart { name } => {
                write!(
                    f,
                    "invalid agent name {name:?}: must start with a-z ({RULE})"
                )
            }
            NameError::BadChar { name, ch } => {
                write!(
                    f,
                    "invalid agent name {name:?}: character {ch:?} not allowed ({RULE})"
                )
            }
            NameError::Reserved { name } => write!(f, "invalid agent name {name:?}: reserved"),
        }
    }
}

impl std::error::Error for NameError {}

impl AgentName {
    /// Validates `name`.
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let mut chars = name.chars();
        let Some(first) = chars.next() else {
            return Err(NameError::Empty);
        };
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong {
                len: name.chars().count(),
            });
        }
        if !first.is_ascii_lowercase() {
            return Err(NameError::BadStart {
                name: name.to_owned(),
            });
        }
        if let Some(ch) =
            chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar {
                name: name.to_owned(),
                ch,
            });
        }
        if name == OPERATOR_RECIPIENT || name == SYSTEM_SENDER {
            return Err(NameError::Reserved {
                name: name.to_owned(),
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// The manager's name.
    pub fn manager() -> Self {
        Self(crate::MANAGER_AGENT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_manager(&self) -> bool {
        self.0 == crate::MANAGER_AGENT
    }
}

impl TryFrom<String> for AgentName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, NameError> {
        Self::parse(&value)
    }
}

impl From<AgentName> for String {
    fn from(value: AgentName) -> String {
        value.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AgentName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for AgentName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Where a message goes. On the wire it is the same string as ever (an
/// agent name, `operator` or `*`), parsed while the request is decoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Recipient {
    Agent(AgentName),
    Operator,
    /// Every known agent except the sender.
    Broadcast,
}

impl Recipient {
    /// Parses a `to` field: an agent name, `operator` or `*`.
    pub fn parse(to: &str) -> Result<Self, NameError> {
        match to {
            OPERATOR_RECIPIENT => Ok(Recipient::Operator),
            BROADCAST_RECIPIENT => Ok(Recipient::Broadcast),
            _ => AgentName::parse(to).map(Recipient::Agent),
        }
    }

    /// The `to` string this recipient is written as.
    pub fn as_str(&self) -> &str {
        match self {
            Recipient::Agent(name) => name.as_str(),
            Recipient::Operator => OPERATOR_RECIPIENT,
            Recipient::Broadcast => BROADCAST_RECIPIENT,
        }
    }
}

impl From<AgentName> for Recipient {
    fn from(name: AgentName) -> Self {
        Recipient::Agent(name)
    }
}

impl TryFrom<String> for Recipient {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, NameError> {
        Self::parse(&value)
    }
}

impl From<Recipient> for String {
    fn from(value: Recipient) -> String {
        value.as_str().to_owned()
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in [
            "a",
            "manager",
            "coder-2",
            "a1234567890123456789012345678901",
        ] {
            assert!(AgentName::parse(ok).is_ok(), "{ok}");
        }
        let cases = [
            (
                "",
                "invalid agent name: empty (names match ^[a-z][a-z0-9-]{0,31}$)",
            ),
            (
                "Bob",
                "invalid agent name \"Bob\": must start with a-z (names match ^[a-z][a-z0-9-]{0,31}$)",
            ),
            (
                "../x",
                "invalid agent name \"../x\": must start with a-z (names match ^[a-z][a-z0-9-]{0,31}$)",
            ),
            (
                "a/b",
                "invalid agent name \"a/b\": character '/' not allowed (names match ^[a-z][a-z0-9-]{0,31}$)",
            ),
            (
                "a b",
                "invalid agent name \"a b\": character ' ' not allowed (names match ^[a-z][a-z0-9-]{0,31}$)",
            ),
            ("operator", "invalid agent name \"operator\": reserved"),
            ("system", "invalid agent name \"system\": reserved"),
            (
                "a12345678901234567890123456789012",
                "invalid agent name: 33 characters, at most 32 (names match ^[a-z][a-z0-9-]{0,31}$)",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(AgentName::parse(input).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn decoding_validates() {
        let err = serde_json::from_str::<AgentName>("\"x/../y\"").unwrap_err();
        assert!(
            err.to_string().contains("character '/' not allowed"),
            "{err}"
        );
    }

    #[test]
    fn recipients() {
        assert_eq!(Recipient::parse("*"), Ok(Recipient::Broadcast));
        assert_eq!(Recipient::parse("operator"), Ok(Recipient::Operator));
        assert!(Recipient::parse("system").is_err());
    }
}
