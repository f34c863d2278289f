//! Rules for account fields: what a username, password, email, nickname, avatar and
//! description may be (API.md's limits), and how logins and search queries are read.
//! Plain functions without I/O so they are unit-tested exhaustively.

use beehive_common::{Error, Result};
use uuid::Uuid;

/// Username length bounds, in characters (all ASCII, so also bytes).
pub const USERNAME_MIN: usize = 3;
/// See [`USERNAME_MIN`].
pub const USERNAME_MAX: usize = 32;
/// Password length bounds, in characters. The upper bound also caps argon2 input.
pub const PASSWORD_MIN: usize = 8;
/// See [`PASSWORD_MIN`].
pub const PASSWORD_MAX: usize = 128;
/// Longest nickname, in characters.
pub const NICKNAME_MAX: usize = 64;
/// Longest avatar URL, in characters.
pub const AVATAR_MAX: usize = 512;
/// Longest profile description, in characters.
pub const DESCRIPTION_MAX: usize = 512;
/// Longest email address (RFC 5321 path limit).
pub const EMAIL_MAX: usize = 254;
/// Longest login string accepted by VerifyCredentials (an email is the longest form).
pub const LOGIN_MAX: usize = EMAIL_MAX;
/// Longest search query, in characters: longer than any username or nickname.
pub const QUERY_MAX: usize = NICKNAME_MAX;
/// Most ids one batch call may name (a full group plus slack).
pub const BATCH_MAX: usize = 2_000;

/// Checks a username: 3-32 characters of `[A-Za-z0-9_.-]`. Case is kept for display;
/// uniqueness ignores it (enforced by the database).
pub fn validate_username(username: &str) -> Result<()> {
    let len = username.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&len) {
        return Err(Error::invalid(
            "username",
            format!("username must be {USERNAME_MIN}-{USERNAME_MAX} characters"),
        ));
    }
    if !username
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(Error::invalid(
            "username",
            "username may only contain letters, digits, '_', '.' and '-'",
        ));
    }
    Ok(())
}

/// Checks a new password's length (8-128 characters). `field` names the request field
/// (`password` or `new_password`).
pub fn validate_password(field: &str, password: &str) -> Result<()> {
    let len = password.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&len) {
        return Err(Error::invalid(
            field,
            format!("{field} must be {PASSWORD_MIN}-{PASSWORD_MAX} characters"),
        ));
    }
    Ok(())
}

/// Checks a nickname: at most 64 characters, no control characters (they break
/// clients' layouts and logs).
pub fn validate_nickname(nickname: &str) -> Result<()> {
    if nickname.chars().count() > NICKNAME_MAX {
        return Err(Error::invalid(
            "nickname",
            format!("nickname must be at most {NICKNAME_MAX} characters"),
        ));
    }
    if nickname.chars().any(char::is_control) {
        return Err(Error::invalid(
            "nickname",
            "nickname must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks an avatar: empty (no avatar), an absolute `http(s)://` URL, or a path on this
/// server (`/api/v1/files/<id>`, what a client gets after uploading), at most 512
/// characters without whitespace or control characters.
pub fn validate_avatar(avatar: &str) -> Result<()> {
    if avatar.is_empty() {
        return Ok(());
    }
    if avatar.chars().count() > AVATAR_MAX {
        return Err(Error::invalid(
            "avatar",
            format!("avatar must be at most {AVATAR_MAX} characters"),
        ));
    }
    let scheme_ok = avatar.starts_with("https://")
        || avatar.starts_with("http://")
        || (avatar.starts_with('/') && !avatar.starts_with("//"));
    let host_ok = !matches!(avatar, "https://" | "http://");
    if !scheme_ok || !host_ok || avatar.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            "avatar",
            "avatar must be an http(s) URL or a path on this server",
        ));
    }
    Ok(())
}

/// Checks a description: at most 512 characters; newlines and tabs are allowed, other
/// control characters are not.
pub fn validate_description(description: &str) -> Result<()> {
    if description.chars().count() > DESCRIPTION_MAX {
        return Err(Error::invalid(
            "description",
            format!("description must be at most {DESCRIPTION_MAX} characters"),
        ));
    }
    if description
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        return Err(Error::invalid(
            "description",
            "description must not contain control characters",
        ));
    }
    Ok(())
}

/// Validates an email address and returns its canonical (trimmed, lowercase) form,
/// which is what uniqueness, codes and logins compare. Deliberately simple: one `@`,
/// a non-empty local part, a dotted domain, no whitespace; the verification code
/// proves the rest.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim();
    let invalid = || Error::invalid("email", "email is not a valid address");
    if email.len() > EMAIL_MAX {
        return Err(Error::invalid(
            "email",
            format!("email must be at most {EMAIL_MAX} characters"),
        ));
    }
    let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
    let domain_ok = !domain.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-'));
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.chars().all(|c| {
            !c.is_whitespace() && !c.is_control() && !matches!(c, '@' | '<' | '>' | '"' | ',' | ';')
        });
    if !domain_ok || !local_ok {
        return Err(invalid());
    }
    Ok(email.to_lowercase())
}

/// Checks a verification code's shape: exactly six ASCII digits.
pub fn validate_code(code: &str) -> Result<()> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::invalid("code", "code must be 6 digits"))
    }
}

/// How a login string names an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// A user id (UUID in any case).
    Id(Uuid),
    /// An email address (contains `@`), canonical form.
    Email(String),
    /// A username, compared ignoring case.
    Username(String),
}

/// Reads a login string. `None` when it cannot name any account (empty or too long),
/// so the caller answers with the one credential error.
pub fn parse_login(login: &str) -> Option<Login> {
    let login = login.trim();
    if login.is_empty() || login.len() > LOGIN_MAX {
        return None;
    }
    if let Ok(id) = Uuid::parse_str(login) {
        return Some(Login::Id(id));
    }
    if login.contains('@') {
        return normalize_email(login).ok().map(Login::Email);
    }
    validate_username(login)
        .ok()
        .map(|()| Login::Username(login.to_owned()))
}

/// Turns a search query into a `LIKE` prefix pattern (wildcards escaped, so `a_%`
/// matches literally). The caller lowercases both sides in SQL.
pub fn search_pattern(query: &str) -> Result<String> {
    let query = query.trim();
    if query.is_empty() {
        return Err(Error::invalid("query", "query must not be empty"));
    }
    if query.chars().count() > QUERY_MAX {
        return Err(Error::invalid(
            "query",
            format!("query must be at most {QUERY_MAX} characters"),
        ));
    }
    let mut pattern = String::with_capacity(query.len() + 1);
    for c in query.chars() {
        if matches!(c, '\\' | '%' | '_') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Ok(pattern)
}

/// Default and maximum page sizes of common.proto's `PageRequest`.
pub const PAGE_DEFAULT: u32 = 50;
/// See [`PAGE_DEFAULT`].
pub const PAGE_MAX: u32 = 200;

/// The effective page size: 0 means the default, above the maximum is clamped.
pub fn page_limit(requested: u32) -> u32 {
    match requested {
        0 => PAGE_DEFAULT,
        n => n.min(PAGE_MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use beehive_common::ErrorCode;

    fn field_of(error: Error) -> Option<String> {
        match error {
            Error::InvalidArgument { field, .. } => field,
            other => panic!("expected invalid_argument, got {:?}", other.code()),
        }
    }

    #[test]
    fn usernames() {
        for ok in ["abc", "A_b.c-9", &"x".repeat(32)] {
            validate_username(ok).expect(ok);
        }
        for bad in [
            "ab",
            &"x".repeat(33),
            "has space",
            "émile",
            "a/b",
            "",
            "abc\n",
        ] {
            let error = validate_username(bad).expect_err(bad);
            assert_eq!(field_of(error).as_deref(), Some("username"));
        }
    }

    #[test]
    fn passwords_count_characters_not_bytes() {
        validate_password("password", "12345678").expect("8");
        validate_password("password", &"é".repeat(128)).expect("128 chars, 256 bytes");
        assert!(validate_password("password", "1234567").is_err());
        let error = validate_password("new_password", &"x".repeat(129)).expect_err("129");
        assert_eq!(field_of(error).as_deref(), Some("new_password"));
    }

    #[test]
    fn nicknames_and_descriptions() {
        validate_nickname(&"蜂".repeat(64)).expect("64 chars");
        assert!(validate_nickname(&"蜂".repeat(65)).is_err());
        assert!(validate_nickname("bad\u{7}bell").is_err());
        validate_description("line one\nline two\ttab").expect("newlines ok");
        assert!(validate_description(&"d".repeat(513)).is_err());
        assert!(validate_description("nul\0").is_err());
    }

    #[test]
    fn avatars() {
        for ok in [
            "",
            "https://cdn.example.com/a.png",
            "http://x/y",
            "/api/v1/files/0190",
        ] {
            validate_avatar(ok).expect(ok);
        }
        let long = format!("https://x/{}", "a".repeat(510));
        for bad in [
            "javascript:alert(1)",
            "ftp://x/y",
            "//evil.example/x",
            "https://",
            "https://x/a b",
            long.as_str(),
        ] {
            assert!(validate_avatar(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn emails_are_canonical() {
        assert_eq!(
            normalize_email("  Alice.B+tag@Example.COM ").expect("valid"),
            "alice.b+tag@example.com"
        );
        for bad in [
            "",
            "no-at",
            "@example.com",
            "a@",
            "a@localhost",
            "a@.com",
            "a@b..com",
            "a b@c.com",
            "a@b@c.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn codes() {
        validate_code("012345").expect("six digits");
        for bad in ["12345", "1234567", "12a456", "１２３４５６", ""] {
            assert!(validate_code(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logins() {
        let id = Uuid::now_v7();
        assert_eq!(parse_login(&id.to_string()), Some(Login::Id(id)));
        assert_eq!(
            parse_login(&id.to_string().to_uppercase()),
            Some(Login::Id(id))
        );
        assert_eq!(
            parse_login("Bob@Example.com"),
            Some(Login::Email("bob@example.com".into()))
        );
        assert_eq!(parse_login("Bob_1"), Some(Login::Username("Bob_1".into())));
        assert_eq!(parse_login(""), None);
        assert_eq!(parse_login("no spaces allowed"), None);
        assert_eq!(parse_login(&"x".repeat(300)), None);
    }

    #[test]
    fn search_patterns_escape_wildcards() {
        assert_eq!(search_pattern(" al ").expect("ok"), "al%");
        assert_eq!(search_pattern("a_%\\").expect("ok"), "a\\_\\%\\\\%");
        assert_eq!(
            search_pattern("").expect_err("empty").code(),
            ErrorCode::InvalidArgument
        );
        assert!(search_pattern(&"q".repeat(65)).is_err());
    }

    #[test]
    fn page_limits() {
        assert_eq!(page_limit(0), 50);
        assert_eq!(page_limit(7), 7);
        assert_eq!(page_limit(10_000), 200);
    }
}
