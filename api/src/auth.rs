//! Caller authentication: `authorization: Bearer <token>` → a role.
//!
//! Only blake3 hashes of tokens are kept in memory. Tokens come from a tokens file
//! (lines `ROLE TOKEN`, `#` comments), from `LEDGERD_ADMIN_TOKEN`, or, on a data
//! directory with neither, from `<data-dir>/admin.token`, generated on first start
//! (mode 0600; its path is logged, never the token).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use tonic::{Request, Status};

/// Who a caller is, and so what it may do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Internal services: create, read, stream.
    Service,
    /// Reads and streams, never writes.
    Auditor,
    /// Reads only.
    ReadOnly,
    /// Customer support: the admin views of users, instruments and payments (personal
    /// data included) and ledger reads; never writes.
    Support,
}

/// What a call needs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Permission {
    Write,
    Read,
    Stream,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            "auditor" => Some(Role::Auditor),
            "read-only" | "readonly" => Some(Role::ReadOnly),
            "support" => Some(Role::Support),
            _ => None,
        }
    }

    pub fn allows(self, permission: Permission) -> bool {
        match (self, permission) {
            (Role::Admin, _) | (Role::Service, _) => true,
            (Role::Auditor, Permission::Read | Permission::Stream) => true,
            (Role::Auditor, Permission::Write) => false,
            (Role::ReadOnly | Role::Support, Permission::Read) => true,
            (Role::ReadOnly | Role::Support, Permission::Write | Permission::Stream) => false,
        }
    }
}

/// Longest token accepted, in bytes.
const TOKEN_BYTES_MAX: usize = 512;
/// Shortest token accepted from configuration.
const TOKEN_BYTES_MIN: usize = 16;

/// Token hashes and their roles.
#[derive(Clone, Default)]
pub struct Tokens {
    roles: HashMap<[u8; 32], Role>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("tokens file {path}: {message}")]
    File { path: String, message: String },
    #[error("tokens file {path} line {line}: {message}")]
    Line { path: String, line: usize, message: String },
    #[error("{0}")]
    Invalid(String),
}

fn hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

impl Tokens {
    pub fn insert(&mut self, token: &str, role: Role) -> Result<(), TokensError> {
        if token.len() < TOKEN_BYTES_MIN || token.len() > TOKEN_BYTES_MAX {
            return Err(TokensError::Invalid(format!("a token must be {TOKEN_BYTES_MIN} to {TOKEN_BYTES_MAX} bytes")));
        }
        self.roles.insert(hash(token), role);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.roles.is_empty()
    }

    pub fn load_file(&mut self, path: &Path) -> Result<(), TokensError> {
        let file_error = |message: String| TokensError::File { path: path.display().to_string(), message };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line_error = |message: &str| TokensError::Line {
                path: path.display().to_string(),
                line: number + 1,
                message: message.to_string(),
            };
            let mut parts = line.split_whitespace();
            let (Some(role), Some(token), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(line_error("expected: ROLE TOKEN"));
            };
            let role = Role::parse(role)
                .ok_or_else(|| line_error("role must be admin, service, auditor, read-only or support"))?;
            self.insert(token, role).map_err(|e| line_error(&e.to_string()))?;
        }
        Ok(())
    }

    /// The role of the caller of `request`.
    pub fn authenticate<T>(&self, request: &Request<T>) -> Result<Role, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token>"))?;
        let header = header.to_str().map_err(|_| Status::unauthenticated("authorization header is not text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be: Bearer <token>"))?;
        if token.len() > TOKEN_BYTES_MAX {
            return Err(Status::unauthenticated("unknown token"));
        }
        self.roles.get(&hash(token)).copied().ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// Authenticates and checks that the caller may do what the call needs.
    pub fn authorize<T>(&self, request: &Request<T>, permission: Permission) -> Result<Role, Status> {
        let role = self.authenticate(request)?;
        if role.allows(permission) {
            Ok(role)
        } else {
            Err(Status::permission_denied(format!("role {role:?} may not {permission:?}")))
        }
    }
}

/// A new random token: 32 bytes from the operating system's CSPRNG, hex.
pub fn generate_token() -> std::io::Result<String> {
    let bytes: [u8; 32] = ledger_platform::random::bytes().map_err(std::io::Error::other)?;
    Ok(ledger_core::chain::to_hex(&bytes))
}

/// Reads `<data-dir>/admin.token`, creating it (mode 0600) with a new token if absent.
pub fn admin_token_file(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("admin.token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_string());
    }
    std::fs::create_dir_all(data_dir)?;
    let token = generate_token()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "generated an admin token");
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_permissions() {
        use Permission::*;
        assert!(Role::Admin.allows(Write) && Role::Service.allows(Write));
        assert!(!Role::Auditor.allows(Write) && Role::Auditor.allows(Read) && Role::Auditor.allows(Stream));
        assert!(!Role::ReadOnly.allows(Write) && Role::ReadOnly.allows(Read) && !Role::ReadOnly.allows(Stream));
        assert!(!Role::Support.allows(Write) && Role::Support.allows(Read) && !Role::Support.allows(Stream));
        assert_eq!(Role::parse("support"), Some(Role::Support));
    }

    #[test]
    fn bearer_tokens_map_to_roles() {
        let mut tokens = Tokens::default();
        tokens.insert("0123456789abcdef-auditor", Role::Auditor).expect("insert");
        let request = |value: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert("authorization", value.parse().expect("ascii"));
            request
        };
        assert_eq!(tokens.authenticate(&request("Bearer 0123456789abcdef-auditor")).ok(), Some(Role::Auditor));
        assert_eq!(
            tokens.authenticate(&request("Bearer wrong-token-0123456")).map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(tokens.authenticate(&request("Basic abc")).map_err(|s| s.code()), Err(tonic::Code::Unauthenticated));
        assert_eq!(tokens.authenticate(&Request::new(())).map_err(|s| s.code()), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            tokens.authorize(&request("Bearer 0123456789abcdef-auditor"), Permission::Write).map_err(|s| s.code()),
            Err(tonic::Code::PermissionDenied)
        );
        assert!(tokens.insert("short", Role::Admin).is_err());
    }
}
