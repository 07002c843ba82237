//! `ais keys new`: a random key and the `[[keys]]` entry holding its SHA-256.
//!
//! Keys are `ais_` followed by 32 random bytes in hex (from the OS generator through
//! `rand`); only the digest goes in the config file, so a leaked config grants nothing.

use ais_model::auth::{key_digest, to_hex, KeyKind};
use anyhow::bail;
use clap::{Args, Subcommand};
use rand::RngCore;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random key and the config-file entry that holds its SHA-256.
    New(NewKeyArgs),
}

#[derive(Debug, Args)]
pub struct NewKeyArgs {
    /// Tenant the key belongs to
    #[arg(long)]
    pub tenant: String,
    /// all (ingest and read), write (ingest only), read (queries only) or admin
    #[arg(long, default_value = "all")]
    pub kind: String,
}

pub fn new_key(args: &NewKeyArgs) -> anyhow::Result<()> {
    if KeyKind::parse(&args.kind).is_none() {
        bail!(
            "--kind must be all, write, read or admin, found {:?}",
            args.kind
        );
    }
    if args.tenant.is_empty() || args.tenant.len() > ais_model::event::limits::TENANT_BYTES {
        bail!(
            "--tenant must be 1 to {} bytes",
            ais_model::event::limits::TENANT_BYTES
        );
    }
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key = format!("ais_{}", to_hex(&secret));
    println!("key (give it to the client; it is not stored anywhere): {key}");
    println!();
    println!("[[keys]]");
    println!("tenant = {:?}", args.tenant);
    println!("sha256 = \"{}\"", to_hex(&key_digest(&key)));
    println!("kind = {:?}", args.kind);
    Ok(())
}
