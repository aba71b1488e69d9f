//! Validated email addresses. Parsing is the only way to get one, so an invalid address
//! cannot exist past the edge of the program.

use std::fmt;

/// An email address: a local part and a domain, trimmed, domain lower-cased.
/// Internationalised domains (`사용자@예시.한국`) and local parts are accepted as UTF-8.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("enter an email address")]
    Empty,
    #[error("an email address needs one @ with something on both sides")]
    Shape,
    #[error("that email address is too long")]
    TooLong,
    #[error("the part after @ is not a valid domain")]
    Domain,
    #[error("the part before @ contains characters that are not allowed")]
    Local,
}

impl EmailAddress {
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.len() > 254 {
            return Err(AddressError::TooLong);
        }
        let (local, domain) = s.rsplit_once('@').ok_or(AddressError::Shape)?;
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::Shape);
        }
        if local.len() > 64 {
            return Err(AddressError::TooLong);
        }
        let local_ok = !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local.chars().all(|c| {
                c.is_alphanumeric()
                    || "!#$%&'*+-/=?^_`{|}~.".contains(c)
                    || (!c.is_ascii() && !c.is_whitespace() && !c.is_control())
            });
        if !local_ok {
            return Err(AddressError::Local);
        }
        let domain = domain.to_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !domain_ok {
            return Err(AddressError::Domain);
        }
        Ok(Self(format!("{local}@{domain}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_international_addresses() {
        for ok in [
            "a@b.co",
            "  Jane.Doe+news@Example.COM ",
            "user@example.kr",
            "사용자@예시.한국",
            "o'neil@mail.example.org",
        ] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            EmailAddress::parse("Jane@Example.COM").unwrap().as_str(),
            "Jane@example.com"
        );
    }

    #[test]
    fn rejects_malformed_addresses_with_a_reason() {
        assert_eq!(EmailAddress::parse(""), Err(AddressError::Empty));
        assert_eq!(EmailAddress::parse("no-at-sign"), Err(AddressError::Shape));
        assert_eq!(
            EmailAddress::parse("@example.com"),
            Err(AddressError::Shape)
        );
        assert_eq!(
            EmailAddress::parse("a@localhost"),
            Err(AddressError::Domain)
        );
        assert_eq!(EmailAddress::parse("a@-bad.com"), Err(AddressError::Domain));
        assert_eq!(
            EmailAddress::parse("a b@example.com"),
            Err(AddressError::Local)
        );
        assert_eq!(
            EmailAddress::parse("a..b@example.com"),
            Err(AddressError::Local)
        );
        assert_eq!(
            EmailAddress::parse(&format!("{}@example.com", "x".repeat(65))),
            Err(AddressError::TooLong)
        );
    }
}
