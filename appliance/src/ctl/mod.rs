//! `appliance ctl`: the command-line client of the box's APIs, every subcommand in this
//! folder. Formats replies for people (tables) or for re-applying (YAML/JSON).
//!
//! [`run`] is the one dispatch (exhaustive over `cli::CtlCommand`); each file is the client
//! of one service: `objects` (Admin: status, apply, get/watch, delete, server
//! list/get/delete/accept/cordon/uncordon), `lifecycle` (allocate, release, server
//! wipe/events), `power` (server power/bootdev/bmc), `logs` (Observe: server logs), `timeline` (Observe: server timeline),
//! `upload` (env upload, plain HTTP), `certs` (AdminCerts: bridge enroll/revoke) and
//! `password` (ConsoleAdmin: admin set-password). This module holds what they share: the
//! error, the token, the channel (plain with the token, or mTLS with `--cert-dir`), the input
//! reader and the stdout writers.
//!
//! Only `ctl/` (and `cli.rs`) name `crate::ctl`; no serving room depends on the client.
//!
//! May touch: the admin endpoint (gRPC/HTTP), stdin, stdout, the files named by arguments
//! and the token file in the data directory.

mod certs;
mod lifecycle;
mod logs;
mod objects;
mod password;
mod power;
mod talosconfig;
mod timeline;
mod upload;

pub use upload::UploadAssetError;

use std::io::Read;
use std::path::{Path, PathBuf};

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::api::auth;
use crate::cli::{AdminCommand, CtlArgs, CtlCommand, ServerCommand};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("endpoint `{endpoint}` is not a valid URL")]
    Endpoint { endpoint: String },
    #[error("cannot reach the appliance at {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "--cert-dir needs an https:// --endpoint (the box's mTLS admin port, e.g. https://10.5.0.1:8443), got `{0}`"
    )]
    CertDirEndpoint(String),
    #[error("--cert-dir {dir}: cannot read {file}")]
    CertFile {
        dir: PathBuf,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no admin token: pass --token or APPLIANCE_TOKEN, or run where {path} is readable")]
    NoToken { path: PathBuf },
    #[error("cannot write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} ({:?})", .0.message(), .0.code())]
    Api(tonic::Status),
    #[error(
        "unknown kind `{0}` (expected server, serverclass, environment, metalmachine or serverbinding)"
    )]
    Kind(String),
    #[error("the two passwords differ; nothing was changed")]
    PasswordMismatch,
    #[error("environment upload")]
    Upload(#[from] UploadAssetError),
    #[error("nothing to upload: give --kernel FILE and/or --initrd FILE")]
    NothingToUpload,
    #[error("the appliance returned an unreadable object")]
    BadReply(#[source] crate::model::ParseObjectError),
    #[error("--since `{0}`: expected a duration (90s, 10m, 2h, 1d) or an RFC 3339 time")]
    Since(String),
    #[error("cannot write to stdout")]
    Stdout(#[source] std::io::Error),
}

impl CtlError {
    /// Whether the command failed only because the reader of its output went away
    /// (`appliance ctl status | head -4`): the command then exits quietly with status 0.
    pub fn reader_gone(&self) -> bool {
        matches!(self, CtlError::Stdout(e) if crate::reader_gone(e))
    }
}

/// Writes ctl output to stdout; a failed write (a closed pipe) is returned, not a panic.
pub(crate) fn write_out(text: std::fmt::Arguments<'_>) -> Result<(), CtlError> {
    crate::write_stdout(text).map_err(CtlError::Stdout)
}

/// `print!` for ctl output, returning `Result<(), CtlError>` (see [`write_out`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::ctl::write_out(format_args!($($arg)*))
    };
}

/// `println!` for ctl output, returning `Result<(), CtlError>` (see [`write_out`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::ctl::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};

impl From<tonic::Status> for CtlError {
    fn from(s: tonic::Status) -> Self {
        CtlError::Api(s)
    }
}

/// Adds the bearer token to every call.
pub(crate) type AddToken =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

/// The admin token: `--token`/`APPLIANCE_TOKEN`, else the token file of the data directory
/// (the configured one, then the user's).
fn token(args: &CtlArgs) -> Result<String, CtlError> {
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    let configured = args
        .data_dir
        .clone()
        .unwrap_or_else(|| crate::config::Config::default().data_dir);
    let mut candidates = vec![configured.clone()];
    candidates.extend(crate::app::user_data_dir());
    for dir in &candidates {
        if let Ok(t) = auth::read(dir) {
            return Ok(t);
        }
    }
    Err(CtlError::NoToken {
        path: configured.join(auth::TOKEN_FILE),
    })
}

/// A channel to the box and the interceptor that adds the admin token (with `--cert-dir`:
/// mTLS with that client certificate, the directory's ca.crt as the only root, no token).
pub(crate) async fn channel(args: &CtlArgs) -> Result<(Channel, AddToken), CtlError> {
    let connect_err = |source| CtlError::Connect {
        endpoint: args.endpoint.clone(),
        source,
    };
    let endpoint = Channel::from_shared(args.endpoint.clone()).map_err(|_| CtlError::Endpoint {
        endpoint: args.endpoint.clone(),
    })?;
    if let Some(dir) = &args.cert_dir {
        if !args.endpoint.starts_with("https://") {
            return Err(CtlError::CertDirEndpoint(args.endpoint.clone()));
        }
        let read = |file: &'static str| {
            std::fs::read(dir.join(file)).map_err(|source| CtlError::CertFile {
                dir: dir.clone(),
                file,
                source,
            })
        };
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.crt")?))
            .identity(Identity::from_pem(read("tls.crt")?, read("tls.key")?))
            .domain_name(args.server_name.clone());
        let channel = endpoint
            .tls_config(tls)
            .map_err(connect_err)?
            .connect()
            .await
            .map_err(connect_err)?;
        return Ok((channel, Box::new(Ok)));
    }
    let token = token(args)?;
    let channel = endpoint.connect().await.map_err(connect_err)?;
    let bearer: MetadataValue<_> =
        format!("Bearer {token}")
            .parse()
            .map_err(|_| CtlError::NoToken {
                path: PathBuf::from("(token has characters not allowed in a header)"),
            })?;
    let add_token: AddToken = Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    });
    Ok((channel, add_token))
}

/// Runs one ctl command; output goes to stdout.
pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    match &args.command {
        CtlCommand::Status => objects::status(&args).await,
        CtlCommand::Apply { file, dry_run } => objects::apply(&args, file, *dry_run).await,
        CtlCommand::Get {
            kind,
            name,
            output,
            watch,
            since_revision,
        } => {
            objects::get(
                &args,
                kind,
                name.clone().unwrap_or_default(),
                *output,
                *watch,
                *since_revision,
            )
            .await
        }
        CtlCommand::Delete { kind, name } => objects::delete(&args, kind, name).await,
        CtlCommand::Server { command } => server(&args, command).await,
        CtlCommand::Allocate {
            class,
            server,
            owner,
            bootstrap,
            patches,
            environment,
        } => {
            lifecycle::allocate(
                &args,
                lifecycle::Allocate {
                    class: class.as_deref(),
                    server: server.as_deref(),
                    owner,
                    bootstrap: bootstrap.as_deref(),
                    patches: patches.as_deref(),
                    environment: environment.as_deref(),
                },
            )
            .await
        }
        CtlCommand::Release { owner, server } => {
            lifecycle::release(&args, owner.as_deref(), server.as_deref()).await
        }
        CtlCommand::Env { command } => upload::env(&args, command).await,
        CtlCommand::Bridge { command } => certs::bridge(&args, command).await,
        CtlCommand::Admin {
            command: AdminCommand::SetPassword,
        } => password::set_password(&args).await,
        CtlCommand::Talosconfig { command } => talosconfig::run(&args, command).await,
    }
}

/// `ctl server …`, by the service that answers it.
async fn server(args: &CtlArgs, command: &ServerCommand) -> Result<(), CtlError> {
    match command {
        ServerCommand::List => objects::server_list(args).await,
        ServerCommand::Get { name, output } => objects::server_get(args, name, *output).await,
        ServerCommand::Delete { name } => objects::server_delete(args, name).await,
        ServerCommand::Accept { name } => {
            objects::server_action(args, name, objects::Action::Accept).await
        }
        ServerCommand::Cordon { name } => {
            objects::server_action(args, name, objects::Action::Cordon).await
        }
        ServerCommand::Uncordon { name } => {
            objects::server_action(args, name, objects::Action::Uncordon).await
        }
        ServerCommand::Rekey { name } => {
            objects::server_action(args, name, objects::Action::Rekey).await
        }
        ServerCommand::Power { action, name } => power::power(args, name, *action).await,
        ServerCommand::Bootdev {
            device,
            name,
            uefi,
            bios,
            persistent,
        } => power::bootdev(args, name, *device, *uefi, *bios, *persistent).await,
        ServerCommand::Bmc {
            name,
            endpoint,
            port,
            interface,
            user,
            password,
            password_file,
            insecure_tls,
            clear_pin,
        } => {
            power::set_bmc(
                args,
                power::SetBmc {
                    name,
                    endpoint,
                    port: *port,
                    interface,
                    user,
                    password: password.as_deref(),
                    password_file: password_file.as_deref(),
                    insecure_tls: *insecure_tls,
                    clear_pin: *clear_pin,
                },
            )
            .await
        }
        ServerCommand::Wipe { name } => lifecycle::wipe(args, name).await,
        ServerCommand::Events { name, limit } => {
            lifecycle::events(args, name.as_deref(), *limit).await
        }
        ServerCommand::Logs {
            name,
            follow,
            since,
            tail,
            output,
        } => logs::logs(args, name, *follow, since.as_deref(), *tail, *output).await,
        ServerCommand::Timeline { name, output } => timeline::timeline(args, name, *output).await,
    }
}

/// The text of a file named on the command line (`-` is stdin).
fn read_input(path: &Path) -> Result<String, CtlError> {
    let err = |source| CtlError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(err)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(err)
    }
}
