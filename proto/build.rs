//! Compiles the .proto files with `protox`, a pure-Rust protobuf compiler, so a
//! fresh machine needs no system `protoc`. The event schema always; the gRPC API
//! (messages, client and server) with the `grpc` feature.

use std::path::PathBuf;

const EVENTS: &str = "proto/ledger/events/v1/events.proto";
const API: &str = "proto/ledger/v1/ledger.proto";
const USER_EVENTS: &str = "proto/ledger/events/v1/users.proto";
const USERS_API: &str = "proto/ledger/v1/users.proto";
const PAYMENT_EVENTS: &str = "proto/ledger/events/v1/payments.proto";
const PAYMENTS_API: &str = "proto/ledger/v1/payments.proto";
const RAILS: &str = "proto/ledger/sandbox/v1/rails.proto";
const FX_EVENTS: &str = "proto/ledger/events/v1/fx.proto";
const FX_API: &str = "proto/ledger/v1/fx.proto";
const ADMIN_API: &str = "proto/ledger/v1/admin.proto";
const HEADS_EVENTS: &str = "proto/ledger/events/v1/heads.proto";
const WEBHOOK_EVENTS: &str = "proto/ledger/events/v1/webhooks.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={EVENTS}");
    println!("cargo:rerun-if-changed={API}");
    println!("cargo:rerun-if-changed={USER_EVENTS}");
    println!("cargo:rerun-if-changed={USERS_API}");
    println!("cargo:rerun-if-changed={PAYMENT_EVENTS}");
    println!("cargo:rerun-if-changed={PAYMENTS_API}");
    println!("cargo:rerun-if-changed={RAILS}");
    println!("cargo:rerun-if-changed={FX_EVENTS}");
    println!("cargo:rerun-if-changed={FX_API}");
    println!("cargo:rerun-if-changed={ADMIN_API}");
    println!("cargo:rerun-if-changed={HEADS_EVENTS}");
    println!("cargo:rerun-if-changed={WEBHOOK_EVENTS}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    if std::env::var_os("CARGO_FEATURE_GRPC").is_none() {
        let descriptors =
            protox::compile([EVENTS, USER_EVENTS, PAYMENT_EVENTS, FX_EVENTS, HEADS_EVENTS, WEBHOOK_EVENTS], ["proto"])?;
        prost_build::Config::new().compile_fds(descriptors)?;
        return Ok(());
    }
    let descriptors = protox::compile(
        [
            EVENTS,
            USER_EVENTS,
            PAYMENT_EVENTS,
            FX_EVENTS,
            HEADS_EVENTS,
            WEBHOOK_EVENTS,
            API,
            USERS_API,
            PAYMENTS_API,
            FX_API,
            ADMIN_API,
            RAILS,
        ],
        ["proto"],
    )?;
    // Server reflection serves this file descriptor set.
    std::fs::write(out_dir.join("descriptors.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
