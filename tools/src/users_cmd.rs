//! `ledgerctl` commands of the users API: signup, login, profile, password, totp,
//! instruments, sessions, security events, wallets, delete.
//!
//! Secrets (passwords, card number and CVV, bank account number) are never flags (see
//! `secret`). Calls after `login` use its session token (`--token` or `LEDGER_TOKEN`).

use clap::Subcommand;
use ledger_proto::api::v1 as wire;
use serde_json::json;
use tonic::transport::Channel;

use crate::client::{status_text, Connection};
use crate::present;
use crate::secret::Secrets;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Register a user (the password at a hidden prompt, or from standard input).
    Signup {
        /// Your full name.
        #[arg(long)]
        name: String,
        /// Your email address: you sign in with it.
        #[arg(long)]
        email: String,
    },
    /// Sign in (the password at a prompt or from standard input); prints the session token.
    Login {
        /// The email address you signed up with.
        #[arg(long)]
        email: String,
        /// The authenticator's current code, once TOTP is on.
        #[arg(long, default_value = "", hide_default_value = true)]
        totp: String,
        /// A single-use recovery code instead of --totp.
        #[arg(long, default_value = "", hide_default_value = true)]
        recovery_code: String,
    },
    /// End this session.
    Logout,
    /// Show or change the signed-in user's personal information.
    Profile {
        #[command(subcommand)]
        command: ProfileCommand,
    },
    /// Change the password (current, then new, at prompts or from standard input); ends
    /// the other sessions.
    Password {
        /// The authenticator's current code, once TOTP is on.
        #[arg(long, default_value = "", hide_default_value = true)]
        totp: String,
    },
    /// Enable or disable the TOTP second factor.
    Totp {
        #[command(subcommand)]
        command: TotpCommand,
    },
    /// Linked bank accounts, cards and digital wallets.
    Instruments {
        #[command(subcommand)]
        command: InstrumentsCommand,
    },
    /// The signed-in user's sessions.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// Sign-ins, failures and security changes, newest first.
    SecurityEvents,
    /// Your wallets with their balances (`wallets open USD` opens one).
    Wallets {
        #[command(subcommand)]
        command: Option<WalletsCommand>,
    },
    /// Erase the signed-in user (the password at a prompt or from standard input): their
    /// personal data becomes unreadable everywhere; the money trail stays.
    DeleteUser {
        /// The authenticator's current code, once TOTP is on.
        #[arg(long, default_value = "", hide_default_value = true)]
        totp: String,
    },
}

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// Your personal information.
    Show,
    /// Change fields; changing --email asks for the current password.
    Update {
        /// Your full name.
        #[arg(long)]
        name: Option<String>,
        /// A new email address (asks for the current password).
        #[arg(long)]
        email: Option<String>,
        /// Phone number in international form, e.g. +442079460958.
        #[arg(long)]
        phone: Option<String>,
        /// Postal address.
        #[arg(long)]
        address: Option<String>,
        /// Date of birth, YYYY-MM-DD.
        #[arg(long)]
        date_of_birth: Option<String>,
        /// The authenticator's current code, once TOTP is on.
        #[arg(long, default_value = "", hide_default_value = true)]
        totp: String,
    },
}

#[derive(Subcommand)]
pub enum TotpCommand {
    /// Start enrolment (asks for the password): prints the secret and URI.
    Enroll,
    /// Finish enrolment with a code from the authenticator: prints the recovery codes.
    Confirm {
        /// The authenticator's current six-digit code.
        code: String,
    },
    /// Turn TOTP off (asks for the password).
    Disable {
        /// The authenticator's current code.
        #[arg(long)]
        code: String,
    },
}

#[derive(Subcommand)]
pub enum InstrumentsCommand {
    /// Your linked instruments.
    List,
    /// Link a bank account (the account number at a prompt or from standard input).
    AddBank {
        /// The bank's name.
        #[arg(long)]
        bank_name: String,
        /// The bank's routing number (nine digits).
        #[arg(long)]
        routing_number: String,
        /// The account holder's name (default: yours).
        #[arg(long, default_value = "", hide_default_value = true)]
        holder_name: String,
    },
    /// Link a card (the number, then the CVV, at prompts or from standard input).
    AddCard {
        /// Expiry month, 1 to 12.
        #[arg(long)]
        exp_month: u32,
        /// Expiry year, e.g. 2031.
        #[arg(long)]
        exp_year: u32,
        /// The name on the card (default: yours).
        #[arg(long, default_value = "", hide_default_value = true)]
        holder_name: String,
    },
    /// Link a digital wallet.
    AddWallet {
        /// The wallet's provider, e.g. applepay.
        #[arg(long)]
        provider: String,
        /// Your handle at the provider.
        #[arg(long)]
        handle: String,
    },
    /// Confirm a bank account's two micro-deposits (in cents: 12 34 for 0.12 and 0.34).
    Verify {
        /// The bank account's instrument id.
        id: String,
        /// The two deposits, in minor units.
        amounts: Vec<u32>,
    },
    /// Make an instrument the default one.
    Default {
        /// The instrument id.
        id: String,
    },
    /// Unlink an instrument.
    Remove {
        /// The instrument id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// Your sessions, this one marked.
    List,
    /// End one of your sessions.
    Revoke {
        /// The session id (from `sessions list`).
        id: String,
    },
}

#[derive(Subcommand)]
pub enum WalletsCommand {
    /// Every wallet with its balance (the same as `wallets` alone).
    List,
    /// Open (or show) the wallet in a currency.
    Open {
        /// ISO 4217 code such as USD.
        currency: String,
    },
}

fn instrument_json(i: &wire::PaymentInstrument) -> serde_json::Value {
    json!({
        "instrument_id": i.instrument_id,
        "kind": wire::InstrumentKind::try_from(i.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
        "status": wire::InstrumentStatus::try_from(i.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "is_default": i.is_default,
        "display": i.display,
    })
}

fn print_instruments(instruments: &[wire::PaymentInstrument], json: bool) {
    if json {
        outln!("{}", json!({ "instruments": instruments.iter().map(instrument_json).collect::<Vec<_>>() }));
        return;
    }
    outln!("{:<22} {:<15} {:<21} {:<8} DISPLAY", "ID", "KIND", "STATUS", "DEFAULT");
    for i in instruments {
        let v = instrument_json(i);
        outln!(
            "{:<22} {:<15} {:<21} {:<8} {}",
            i.instrument_id,
            v["kind"].as_str().unwrap_or(""),
            v["status"].as_str().unwrap_or(""),
            if i.is_default { "yes" } else { "" },
            i.display
        );
    }
}

fn print_profile(p: &wire::UserProfile, json: bool) {
    if json {
        outln!(
            "{}",
            json!({
                "user_id": p.user_id, "name": p.name, "email": p.email, "phone": p.phone,
                "address": p.address, "date_of_birth": p.date_of_birth, "totp_enabled": p.totp_enabled,
                "registered_at_ns": p.registered_at_ns,
            })
        );
    } else {
        for (label, value) in [
            ("user id", p.user_id.as_str()),
            ("name", &p.name),
            ("email", &p.email),
            ("phone", &p.phone),
            ("address", &p.address),
            ("date of birth", &p.date_of_birth),
            ("second factor", if p.totp_enabled { "authenticator app" } else { "off" }),
        ] {
            outln!("{label:<14} {value}");
        }
    }
}

fn print_wallets(wallets: &[wire::Wallet], json: bool) {
    if json {
        let items: Vec<_> = wallets
            .iter()
            .map(|w| json!({"currency": w.currency, "account_id": w.account_id, "balance": w.balance, "available": w.available}))
            .collect();
        outln!("{}", json!({ "wallets": items }));
        return;
    }
    // The server sends wallet balances in major units already.
    outln!("{:<9} {:>24} {:>24} ACCOUNT", "CURRENCY", "BALANCE", "AVAILABLE");
    for w in wallets {
        let (balance, available) = (format!("{} {}", w.balance, w.currency), format!("{} {}", w.available, w.currency));
        outln!("{:<9} {balance:>24} {available:>24} {}", w.currency, w.account_id);
    }
}

pub async fn run(connection: &Connection, command: UsersCommand) -> Result<bool, String> {
    let mut users = wire::users_client::UsersClient::new(connection.channel().await?);
    let mut secrets = Secrets::new();
    let json = connection.json;
    match command {
        UsersCommand::Signup { name, email } => {
            let password = secrets.read_new("password")?;
            let response = users
                .register(wire::RegisterRequest { name, email, password })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                outln!("{}", json!({ "user_id": response.user_id }));
            } else if connection.quiet {
                outln!("{}", response.user_id);
            } else {
                outln!("registered user {}", response.user_id);
            }
        }
        UsersCommand::Login { email, totp, recovery_code } => {
            let password = secrets.read("password")?;
            let request = wire::LoginRequest { email, password, totp_code: totp, recovery_code };
            login(&mut users, request, json).await?;
        }
        UsersCommand::Logout => {
            users.logout(connection.request(wire::LogoutRequest {})?).await.map_err(status_text)?;
            if !json {
                outln!("signed out");
            }
        }
        UsersCommand::Profile { command: ProfileCommand::Show } => {
            let p = users.get_profile(connection.request(wire::UserRequest::default())?).await.map_err(status_text)?;
            print_profile(p.get_ref(), json);
        }
        UsersCommand::Profile {
            command: ProfileCommand::Update { name, email, phone, address, date_of_birth, totp },
        } => {
            let current_password = if email.is_some() { secrets.read("current password")? } else { String::new() };
            let request = wire::UpdateProfileRequest {
                user_id: String::new(),
                name,
                email,
                phone,
                address,
                date_of_birth,
                current_password,
                totp_code: totp,
            };
            let p = users.update_profile(connection.request(request)?).await.map_err(status_text)?;
            print_profile(p.get_ref(), json);
        }
        UsersCommand::Password { totp } => {
            let current_password = secrets.read("current password")?;
            let new_password = secrets.read_new("new password")?;
            let request =
                wire::ChangePasswordRequest { user_id: String::new(), current_password, totp_code: totp, new_password };
            let r = users.change_password(connection.request(request)?).await.map_err(status_text)?.into_inner();
            if json {
                outln!("{}", json!({ "sessions_ended": r.sessions_ended }));
            } else {
                outln!("password changed; {} other sessions ended", r.sessions_ended);
            }
        }
        UsersCommand::Totp { command } => totp(&mut users, connection, command, &mut secrets).await?,
        UsersCommand::Instruments { command } => instruments(&mut users, connection, command, &mut secrets).await?,
        UsersCommand::Sessions { command } => sessions(&mut users, connection, command).await?,
        UsersCommand::SecurityEvents => security_events(&mut users, connection).await?,
        UsersCommand::Wallets { command: None | Some(WalletsCommand::List) } => {
            let wallets = users
                .list_wallets(connection.request(wire::UserRequest::default())?)
                .await
                .map_err(status_text)?
                .into_inner()
                .wallets;
            print_wallets(&wallets, json);
        }
        UsersCommand::Wallets { command: Some(WalletsCommand::Open { currency }) } => {
            let request = wire::OpenWalletRequest { user_id: String::new(), currency };
            let wallet = users.open_wallet(connection.request(request)?).await.map_err(status_text)?.into_inner();
            print_wallets(&[wallet], json);
        }
        UsersCommand::DeleteUser { totp } => {
            let current_password = secrets.read("current password")?;
            let request = wire::ReauthRequest { user_id: String::new(), current_password, totp_code: totp };
            users.delete_user(connection.request(request)?).await.map_err(status_text)?;
            if !json {
                outln!("user deleted: their personal data is erased");
            }
        }
    }
    Ok(true)
}

async fn login(
    users: &mut wire::users_client::UsersClient<Channel>,
    request: wire::LoginRequest,
    json: bool,
) -> Result<(), String> {
    let r = users.login(request).await.map_err(status_text)?.into_inner();
    if json {
        outln!(
            "{}",
            json!({
                "user_id": r.user_id, "session_token": r.session_token, "session_id": r.session_id,
                "idle_expires_at_ns": r.idle_expires_at_ns, "expires_at_ns": r.expires_at_ns,
            })
        );
    } else {
        // The token alone on standard output, so `export LEDGER_TOKEN=$(ledgerctl login ...)` works.
        outln!("{}", r.session_token);
        eprintln!("signed in as user {} (session {})", r.user_id, r.session_id);
    }
    Ok(())
}

async fn sessions(
    users: &mut wire::users_client::UsersClient<Channel>,
    connection: &Connection,
    command: SessionsCommand,
) -> Result<(), String> {
    let json = connection.json;
    match command {
        SessionsCommand::List => {
            let sessions = users
                .list_sessions(connection.request(wire::UserRequest::default())?)
                .await
                .map_err(status_text)?
                .into_inner()
                .sessions;
            if json {
                let items: Vec<_> = sessions
                    .iter()
                    .map(|s| json!({"session_id": s.session_id, "started_at_ns": s.started_at_ns, "last_seen_at_ns": s.last_seen_at_ns, "expires_at_ns": s.expires_at_ns, "source": s.source, "current": s.current}))
                    .collect();
                outln!("{}", json!({ "sessions": items }));
            } else {
                let offset = connection.offset()?;
                let time = |ns: u64| present::time_text(ns, offset);
                outln!("{:<18} {:<25} {:<25} {:<16} CURRENT", "ID", "STARTED", "LAST_SEEN", "SOURCE");
                for s in &sessions {
                    let current = if s.current { "yes" } else { "" };
                    let (started, seen) = (time(s.started_at_ns), time(s.last_seen_at_ns));
                    outln!("{:<18} {started:<25} {seen:<25} {:<16} {current}", s.session_id, s.source);
                }
            }
        }
        SessionsCommand::Revoke { id } => {
            let request = wire::RevokeSessionRequest { user_id: String::new(), session_id: id };
            users.revoke_session(connection.request(request)?).await.map_err(status_text)?;
            if !json {
                outln!("session revoked");
            }
        }
    }
    Ok(())
}

async fn security_events(
    users: &mut wire::users_client::UsersClient<Channel>,
    connection: &Connection,
) -> Result<(), String> {
    let json = connection.json;
    let events = users
        .list_security_events(connection.request(wire::UserRequest::default())?)
        .await
        .map_err(status_text)?
        .into_inner()
        .events;
    if json {
        let items: Vec<_> =
            events.iter().map(|e| json!({"kind": e.kind, "at_ns": e.at_ns, "detail": e.detail})).collect();
        outln!("{}", json!({ "events": items }));
    } else {
        let offset = connection.offset()?;
        outln!("{:<25} {:<24} DETAIL", "AT", "KIND");
        for e in &events {
            outln!("{:<25} {:<24} {}", present::time_text(e.at_ns, offset), e.kind, e.detail);
        }
    }
    Ok(())
}

async fn totp(
    users: &mut wire::users_client::UsersClient<Channel>,
    connection: &Connection,
    command: TotpCommand,
    secrets: &mut Secrets,
) -> Result<(), String> {
    match command {
        TotpCommand::Enroll => {
            let current_password = secrets.read("current password")?;
            let request = wire::ReauthRequest { current_password, ..Default::default() };
            let r = users.enroll_totp(connection.request(request)?).await.map_err(status_text)?.into_inner();
            if connection.json {
                outln!("{}", json!({ "secret": r.secret, "otpauth_uri": r.otpauth_uri }));
            } else {
                outln!("secret {}\nuri    {}\nthen: ledgerctl totp confirm <code>", r.secret, r.otpauth_uri);
            }
        }
        TotpCommand::Confirm { code } => {
            let request = wire::ConfirmTotpRequest { user_id: String::new(), code };
            let codes = users.confirm_totp(connection.request(request)?).await.map_err(status_text)?.into_inner();
            if connection.json {
                outln!("{}", json!({ "recovery_codes": codes.recovery_codes }));
            } else {
                outln!("second factor on; single-use recovery codes (keep them safe, shown once):");
                for code in &codes.recovery_codes {
                    outln!("  {code}");
                }
            }
        }
        TotpCommand::Disable { code } => {
            let current_password = secrets.read("current password")?;
            let request = wire::ReauthRequest { user_id: String::new(), current_password, totp_code: code };
            users.disable_totp(connection.request(request)?).await.map_err(status_text)?;
            if !connection.json {
                outln!("second factor off");
            }
        }
    }
    Ok(())
}

async fn instruments(
    users: &mut wire::users_client::UsersClient<Channel>,
    connection: &Connection,
    command: InstrumentsCommand,
    secrets: &mut Secrets,
) -> Result<(), String> {
    let json = connection.json;
    let added = |r: wire::AddInstrumentResponse| {
        if connection.quiet {
            if let Some(i) = &r.instrument {
                outln!("{}", i.instrument_id);
            }
            return;
        }
        if let Some(i) = &r.instrument {
            print_instruments(std::slice::from_ref(i), json);
        }
        if !r.sandbox_micro_deposits.is_empty() && !json {
            outln!(
                "sandbox micro-deposits: {:?} (confirm with: ledgerctl instruments verify ID A B)",
                r.sandbox_micro_deposits
            );
        }
    };
    match command {
        InstrumentsCommand::List => {
            let list = users
                .list_instruments(connection.request(wire::UserRequest::default())?)
                .await
                .map_err(status_text)?
                .into_inner();
            print_instruments(&list.instruments, json);
        }
        InstrumentsCommand::AddBank { bank_name, routing_number, holder_name } => {
            let account_number = secrets.read("account number")?;
            let request = wire::AddBankAccountRequest {
                user_id: String::new(),
                bank_name,
                routing_number,
                account_number,
                holder_name,
            };
            added(users.add_bank_account(connection.request(request)?).await.map_err(status_text)?.into_inner());
        }
        InstrumentsCommand::AddCard { exp_month, exp_year, holder_name } => {
            let number = secrets.read("card number")?;
            let cvv = secrets.read("CVV")?;
            let request =
                wire::AddCardRequest { user_id: String::new(), number, exp_month, exp_year, cvv, holder_name };
            added(users.add_card(connection.request(request)?).await.map_err(status_text)?.into_inner());
        }
        InstrumentsCommand::AddWallet { provider, handle } => {
            let request = wire::AddDigitalWalletRequest { user_id: String::new(), provider, handle };
            added(users.add_digital_wallet(connection.request(request)?).await.map_err(status_text)?.into_inner());
        }
        InstrumentsCommand::Verify { id, amounts } => {
            let request = wire::VerifyInstrumentRequest { user_id: String::new(), instrument_id: id, amounts };
            let i = users.verify_instrument(connection.request(request)?).await.map_err(status_text)?.into_inner();
            print_instruments(&[i], json);
        }
        InstrumentsCommand::Default { id } => {
            let request = wire::InstrumentRequest { user_id: String::new(), instrument_id: id };
            let i = users.set_default_instrument(connection.request(request)?).await.map_err(status_text)?.into_inner();
            print_instruments(&[i], json);
        }
        InstrumentsCommand::Remove { id } => {
            let request = wire::InstrumentRequest { user_id: String::new(), instrument_id: id };
            users.remove_instrument(connection.request(request)?).await.map_err(status_text)?;
            if !json {
                outln!("instrument removed");
            }
        }
    }
    Ok(())
}
