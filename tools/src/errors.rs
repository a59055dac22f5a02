//! Errors in words: what went wrong, the flag it concerns, and what to do about it.

use std::sync::OnceLock;

/// What the error texts need to know about the call: the server's address and whether
/// the token is a user's session token (`lus_…`) or a role token.
struct Context {
    addr: String,
    session: Option<bool>,
}

static CONTEXT: OnceLock<Context> = OnceLock::new();

/// Set once, when the command line is read.
pub fn set_context(addr: &str, token: Option<&str>) {
    let session = token.filter(|t| !t.is_empty()).map(|t| t.starts_with(SESSION_TOKEN_PREFIX));
    let _ = CONTEXT.set(Context { addr: addr.to_string(), session });
}

/// How a user's session token starts (the server's `SESSION_TOKEN_PREFIX`).
pub const SESSION_TOKEN_PREFIX: &str = "lus_";

const START_HINT: &str = "start it with `cargo run --release --bin ledgerd`";
const ADMIN_HINT: &str = "give an admin token, e.g. `--token-file data/admin.token` (ledgerd writes it there)";
const LOGIN_HINT: &str = "sign in with `export LEDGER_TOKEN=$(ledgerctl login --email you@example.com)`";

fn addr() -> &'static str {
    CONTEXT.get().map_or("the server", |c| c.addr.as_str())
}

fn session() -> Option<bool> {
    CONTEXT.get().and_then(|c| c.session)
}

/// The server could not be reached at all.
pub fn unreachable(addr: &str, cause: &str) -> String {
    format!("cannot reach ledgerd at {addr} ({cause}) — is it running? {START_HINT}")
}

/// Wire field names the server puts in its messages, and the flags that set them.
const FIELD_FLAGS: &[(&str, &str)] = &[
    ("amount", "--amount"),
    ("currency", "--currency"),
    ("idempotency_key", "--key"),
    ("receiver_email", "--to-email"),
    ("receiver_user_id", "--to-user"),
    ("payer_email", "--from-email"),
    ("payer_user_id", "--from-user"),
    ("instrument_id", "--instrument"),
    ("refund_id", "--refund-id"),
    ("account_id", "--account"),
    ("owner_id", "--owner"),
    ("quote_id", "--quote"),
    ("funding", "--funding"),
    ("note", "--note"),
    ("from_ns", "--from"),
    ("to_ns", "--to"),
    ("email", "--email"),
    ("name", "--name"),
    ("password", "the password"),
    ("current_password", "the current password"),
    ("new_password", "the new password"),
    ("totp_code", "--totp"),
    ("recovery_code", "--recovery-code"),
    ("date_of_birth", "--date-of-birth"),
    ("routing_number", "--routing-number"),
    ("exp_month", "--exp-month"),
    ("exp_year", "--exp-year"),
    ("session_id", "the session id"),
    ("pending_id", "--pending-id"),
];

/// "amount: too many decimals" → "--amount: too many decimals"; a wire name with an
/// underscore is replaced anywhere ("give totp_code" → "give --totp"), a plain word only
/// where it leads the message (elsewhere it may be prose).
fn with_flag(message: &str) -> String {
    let mut text = message.to_string();
    for (field, flag) in FIELD_FLAGS {
        if let Some(rest) = text.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            text = format!("{flag}:{rest}");
        }
    }
    for (field, flag) in FIELD_FLAGS.iter().filter(|(field, _)| field.contains('_')) {
        text = text
            .split(' ')
            .map(|word| match word.strip_prefix(field) {
                Some(rest) if rest.is_empty() || rest.starts_with([',', '.', ';', ')']) => format!("{flag}{rest}"),
                _ => word.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    text
}

/// A gRPC error as the commands print it: the code in words, the server's message, and
/// a hint for the common mistakes.
pub fn status_text(status: tonic::Status) -> String {
    use tonic::Code;
    let message = status.message();
    let about_token = |m: &str| m.contains("unknown token") || m.contains("session expired");
    match status.code() {
        Code::Unauthenticated if message.contains("missing authorization") => {
            format!("this command needs a token: {ADMIN_HINT}, or for a user's own commands {LOGIN_HINT}")
        }
        Code::Unauthenticated if about_token(message) && session() == Some(true) => {
            "your session has ended: sign in again with `ledgerctl login`".into()
        }
        Code::Unauthenticated if about_token(message) => {
            format!("the server does not know this token (from --token, --token-file or LEDGER_TOKEN): {ADMIN_HINT}")
        }
        Code::Unauthenticated => format!("not signed in: {}", with_flag(message)),
        Code::PermissionDenied if message.contains("role token") || session() == Some(true) => {
            format!("not allowed with a user's session: {message}; this command needs an admin token: {ADMIN_HINT}")
        }
        Code::PermissionDenied if message.contains("session") => {
            format!("this command acts as a signed-in user, not with an admin token: {LOGIN_HINT}")
        }
        Code::PermissionDenied => format!("not allowed: {message}"),
        Code::Unavailable if message.contains("transport") || message.contains("connect") => {
            unreachable(addr(), message)
        }
        Code::Unavailable => format!("ledgerd at {} is unavailable: {message} (retry in a moment)", addr()),
        Code::InvalidArgument => format!("invalid input: {}", with_flag(message)),
        Code::NotFound => format!("not found: {}", with_flag(message)),
        Code::AlreadyExists => format!("already exists: {message}"),
        Code::FailedPrecondition => format!("not possible now: {}", with_flag(message)),
        Code::OutOfRange => format!("out of range: {}", with_flag(message)),
        Code::ResourceExhausted => format!("too much at once: {message} (wait a moment and retry)"),
        Code::DeadlineExceeded => format!("timed out: {message} (retry; the same --key returns the same payment)"),
        Code::Aborted => format!("conflict: {message} (retry)"),
        Code::Cancelled => format!("cancelled: {message}"),
        Code::Unimplemented => format!("this ledgerd does not offer that call: {message} (is it an older version?)"),
        Code::DataLoss => {
            format!(
                "the server found damaged data: {message} (tell its operator; `ledgerctl audit verify` checks a log)"
            )
        }
        Code::Internal | Code::Unknown => format!("server error: {message}"),
        Code::Ok => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_flags() {
        let text = status_text(tonic::Status::invalid_argument("amount: has more than 2 fraction digits"));
        assert_eq!(text, "invalid input: --amount: has more than 2 fraction digits");
        let text = status_text(tonic::Status::permission_denied("the users API needs a user's session token"));
        assert!(text.contains("ledgerctl login"), "{text}");
        let text = status_text(tonic::Status::permission_denied(
            "a user session may read only its own history and reports; this call needs a role token",
        ));
        assert!(text.contains("--token-file data/admin.token"), "{text}");
        let text =
            status_text(tonic::Status::unauthenticated("second factor required: give totp_code or recovery_code"));
        assert_eq!(text, "not signed in: second factor required: give --totp or --recovery-code");
        let text = status_text(tonic::Status::invalid_argument("receiver_email: no such user"));
        assert_eq!(text, "invalid input: --to-email: no such user");
        let text = status_text(tonic::Status::unauthenticated("missing authorization: Bearer <token>"));
        assert!(text.contains("needs a token"), "{text}");
    }
}
