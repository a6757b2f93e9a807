//! `appliance ctl`: a thin admin-API client. Formats replies for people (tables) or for
//! re-applying (YAML/JSON).

use std::io::Read;
use std::path::PathBuf;

use appliance_rpc::admin::admin_client::AdminClient;
use appliance_rpc::admin::{
    ApplyRequest, ChangeType, DeleteRequest, GetRequest, Object as PbObject, ServerActionKind,
    ServerActionRequest, StatusRequest, WatchRequest,
};
use appliance_rpc::console::SetPasswordRequest;
use appliance_rpc::console::console_admin_client::ConsoleAdminClient;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::api::auth;
use crate::boot::assets::Asset;
use crate::cli::{
    AdminCommand, BridgeCommand, CtlArgs, CtlCommand, EnvCommand, Output, ServerCommand,
};
use crate::model::{Kind, Object};

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
    Upload(#[from] crate::boot::upload::UploadAssetError),
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

pub(crate) use outln;

impl From<tonic::Status> for CtlError {
    fn from(s: tonic::Status) -> Self {
        CtlError::Api(s)
    }
}

/// Adds the bearer token to every call.
pub(crate) type AddToken =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

type Client = AdminClient<tonic::service::interceptor::InterceptedService<Channel, AddToken>>;

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

async fn connect(args: &CtlArgs) -> Result<Client, CtlError> {
    let (channel, add_token) = channel(args).await?;
    Ok(AdminClient::with_interceptor(channel, add_token))
}

/// A channel to the box and the interceptor that adds the admin token.
pub(crate) async fn channel(args: &CtlArgs) -> Result<(Channel, AddToken), CtlError> {
    let token = token(args)?;
    let channel = Channel::from_shared(args.endpoint.clone())
        .map_err(|_| CtlError::Endpoint {
            endpoint: args.endpoint.clone(),
        })?
        .connect()
        .await
        .map_err(|source| CtlError::Connect {
            endpoint: args.endpoint.clone(),
            source,
        })?;
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

/// `ctl env …`: plain HTTP (streamed file uploads), not gRPC.
async fn env(args: &CtlArgs, command: &EnvCommand) -> Result<(), CtlError> {
    let EnvCommand::Upload {
        name,
        kernel,
        initrd,
    } = command;
    if kernel.is_none() && initrd.is_none() {
        return Err(CtlError::NothingToUpload);
    }
    let token = token(args)?;
    for (asset, path) in [(Asset::Kernel, kernel), (Asset::Initrd, initrd)] {
        if let Some(path) = path {
            let summary =
                crate::boot::upload::upload(&args.endpoint, &token, name, asset, path).await?;
            outln!("{name}: {summary}")?;
        }
    }
    Ok(())
}

fn parse_kind(s: &str) -> Result<Kind, CtlError> {
    Kind::parse_cli(s).ok_or_else(|| CtlError::Kind(s.to_string()))
}

/// Runs one ctl command; output goes to stdout.
pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    if let CtlCommand::Admin { command } = &args.command {
        return admin(&args, command).await;
    }
    if let CtlCommand::Server { command } = &args.command
        && crate::bmc::ctl::handles(command)
    {
        return crate::bmc::ctl::run(&args, command).await;
    }
    if let CtlCommand::Env { command } = &args.command {
        return env(&args, command).await;
    }
    if let CtlCommand::Bridge { command } = &args.command {
        return bridge(&args, command).await;
    }
    if let Some(done) = crate::reconcile::ctl::run(&args).await {
        return done;
    }
    if let Some(done) = crate::siderolink::ctl::run(&args).await {
        return done;
    }
    let mut client = connect(&args).await?;
    match args.command {
        CtlCommand::Status => {
            let s = client.status(StatusRequest {}).await?.into_inner();
            outln!("version:   {}", s.version)?;
            outln!("uptime:    {}s", s.uptime_seconds)?;
            outln!("data dir:  {}", s.data_dir)?;
            outln!("revision:  {}", s.store_revision)?;
            let mut kinds: Vec<_> = s.objects.into_iter().collect();
            kinds.sort();
            for (k, n) in kinds {
                outln!("{:<16}{n}", format!("{k}:"))?;
            }
        }
        CtlCommand::Apply { file, dry_run } => {
            let documents = read_input(&file)?;
            let reply = client
                .apply(ApplyRequest { documents, dry_run })
                .await?
                .into_inner();
            for a in reply.applied {
                outln!("{}/{} {}", a.kind.to_lowercase(), a.name, a.result)?;
            }
        }
        CtlCommand::Get {
            kind,
            name,
            output,
            watch,
            since_revision,
        } => {
            let kind = parse_kind(&kind)?;
            let name = name.unwrap_or_default();
            let since = match since_revision {
                Some(r) => r,
                None => {
                    let (objects, revision) = get_at(&mut client, kind, name.clone()).await?;
                    print_objects(kind, &objects, output)?;
                    revision
                }
            };
            if watch {
                watch_changes(&mut client, kind, name, since, output).await?;
            }
        }
        CtlCommand::Delete { kind, name } => {
            let kind = parse_kind(&kind)?;
            client
                .delete(DeleteRequest {
                    kind: kind.to_string(),
                    name: name.clone(),
                })
                .await?;
            outln!("{}/{name} deleted", kind.as_str().to_lowercase())?;
        }
        CtlCommand::Server { command } => server(&mut client, command).await?,
        CtlCommand::Admin { .. } => unreachable!("handled above"),
        CtlCommand::Env { .. } | CtlCommand::Bridge { .. } => {
            unreachable!("handled before connecting")
        }
        CtlCommand::Allocate { .. } | CtlCommand::Release { .. } => {}
    }
    Ok(())
}

/// `ctl bridge enroll|revoke`: the `AdminCerts` service (token, :8081).
async fn bridge(args: &CtlArgs, command: &BridgeCommand) -> Result<(), CtlError> {
    use appliance_rpc::admin::admin_certs_client::AdminCertsClient;
    use appliance_rpc::admin::{EnrollRequest, RevokeRequest};
    let (channel, add_token) = channel(args).await?;
    let mut client = AdminCertsClient::with_interceptor(channel, add_token);
    match command {
        BridgeCommand::Enroll {
            name,
            out,
            secret,
            namespace,
        } => {
            let reply = client
                .enroll(EnrollRequest { name: name.clone() })
                .await?
                .into_inner();
            let files = [
                ("ca.crt", &reply.ca_pem),
                ("tls.crt", &reply.cert_pem),
                ("tls.key", &reply.key_pem),
            ];
            match out {
                Some(dir) => {
                    for (file, text) in files {
                        let path = dir.join(file);
                        crate::secrets::files::write_private(&path, text.as_bytes(), false)
                            .map_err(|source| CtlError::WriteFile { path, source })?;
                    }
                    outln!(
                        "{name}: ca.crt, tls.crt, tls.key written to {} (server name {})",
                        dir.display(),
                        reply.server_name
                    )?;
                }
                None => {
                    use base64::Engine;
                    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
                    outln!(
                        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\n  namespace: {namespace}\n  annotations:\n    appliance.sidero.dev/client: {name}\n    appliance.sidero.dev/server-name: {}\ntype: Opaque\ndata:",
                        reply.server_name
                    )?;
                    for (file, text) in files {
                        outln!("  {file}: {}", b64(text))?;
                    }
                }
            }
        }
        BridgeCommand::Revoke { name } => {
            client.revoke(RevokeRequest { name: name.clone() }).await?;
            outln!("{name}: certificate revoked")?;
        }
    }
    Ok(())
}

async fn admin(args: &CtlArgs, command: &AdminCommand) -> Result<(), CtlError> {
    match command {
        AdminCommand::SetPassword => {
            let password = read_new_password()?;
            let (channel, add_token) = channel(args).await?;
            let mut client = ConsoleAdminClient::with_interceptor(channel, add_token);
            let reply = client
                .set_password(SetPasswordRequest { password })
                .await?
                .into_inner();
            outln!(
                "console password set; {} console session(s) ended",
                reply.sessions_ended
            )?;
        }
    }
    Ok(())
}

/// Reads a new password from stdin: on a terminal, twice without echo (`stty -echo`);
/// otherwise the first line.
fn read_new_password() -> Result<String, CtlError> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    let read_line = || -> Result<String, CtlError> {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|source| CtlError::ReadFile {
                path: PathBuf::from("-"),
                source,
            })?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    };
    if !stdin.is_terminal() {
        return read_line();
    }
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status();
    };
    let prompt = |text: &str| -> Result<String, CtlError> {
        eprint!("{text}");
        let _ = std::io::stderr().flush();
        stty("-echo");
        let line = read_line();
        stty("echo");
        eprintln!();
        line
    };
    let first = prompt("New console password: ")?;
    let second = prompt("Repeat it: ")?;
    if first != second {
        return Err(CtlError::PasswordMismatch);
    }
    Ok(first)
}

async fn server(client: &mut Client, command: ServerCommand) -> Result<(), CtlError> {
    let (name, action, verb) = match command {
        ServerCommand::List => {
            let objects = get(client, Kind::Server, String::new()).await?;
            return print_objects(Kind::Server, &objects, Output::Table);
        }
        ServerCommand::Get { name, output } => {
            let objects = get(client, Kind::Server, name).await?;
            return print_objects(Kind::Server, &objects, output);
        }
        ServerCommand::Delete { name } => {
            client
                .delete(DeleteRequest {
                    kind: Kind::Server.to_string(),
                    name: name.clone(),
                })
                .await?;
            outln!("server/{name} deleted")?;
            return Ok(());
        }
        // Lifecycle commands are run by `reconcile::ctl` before we get here.
        ServerCommand::Events { .. } | ServerCommand::Wipe { .. } => return Ok(()),
        // SideroLink commands are run by `siderolink::ctl` before we get here.
        ServerCommand::Logs { .. } => return Ok(()),
        ServerCommand::Accept { name } => (name, ServerActionKind::ServerActionAccept, "accepted"),
        ServerCommand::Cordon { name } => (name, ServerActionKind::ServerActionCordon, "cordoned"),
        ServerCommand::Uncordon { name } => {
            (name, ServerActionKind::ServerActionUncordon, "uncordoned")
        }
        ServerCommand::Power { .. } | ServerCommand::Bootdev { .. } | ServerCommand::Bmc { .. } => {
            unreachable!("BMC commands are dispatched to bmc::ctl before connecting")
        }
    };
    client
        .server_action(ServerActionRequest {
            name: name.clone(),
            action: action as i32,
        })
        .await?;
    outln!("server/{name} {verb}")?;
    Ok(())
}

async fn get(client: &mut Client, kind: Kind, name: String) -> Result<Vec<Object>, CtlError> {
    Ok(get_at(client, kind, name).await?.0)
}

/// Objects of a kind (or one) and the store revision they were read at.
async fn get_at(
    client: &mut Client,
    kind: Kind,
    name: String,
) -> Result<(Vec<Object>, u64), CtlError> {
    let reply = client
        .get(GetRequest {
            kind: kind.to_string(),
            name,
        })
        .await?
        .into_inner();
    let objects = reply
        .objects
        .iter()
        .map(|o: &PbObject| Object::from_json(kind, &o.json).map_err(CtlError::BadReply))
        .collect::<Result<_, _>>()?;
    Ok((objects, reply.revision))
}

/// `ctl get --watch`: prints each change after `since` until the stream ends. Table output
/// is one line per change (`<revision> PUT|DELETE <kind>/<name>`); YAML the objects as
/// documents headed by that line as a comment; JSON one object per line
/// (`{"type","revision","kind","name","object"}`). Bookmarks are not printed.
async fn watch_changes(
    client: &mut Client,
    kind: Kind,
    name: String,
    since: u64,
    output: Output,
) -> Result<(), CtlError> {
    let mut stream = client
        .watch(WatchRequest {
            kinds: vec![kind.to_string()],
            name,
            since_revision: Some(since),
            bookmark_interval_ms: 0,
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        let op = match ChangeType::try_from(event.r#type) {
            Ok(ChangeType::Put) => "PUT",
            Ok(ChangeType::Delete) => "DELETE",
            _ => continue,
        };
        let object = Object::from_json(kind, &event.json).map_err(CtlError::BadReply)?;
        let line = format!(
            "{} {op} {}/{}",
            event.revision,
            kind.as_str().to_lowercase(),
            event.name
        );
        match output {
            Output::Table => outln!("{line}")?,
            Output::Yaml => {
                outln!("---\n# {line}")?;
                out!("{}", object.to_yaml())?;
            }
            Output::Json => {
                let value = serde_json::json!({
                    "type": op,
                    "revision": event.revision,
                    "kind": event.kind,
                    "name": event.name,
                    "object": object,
                });
                outln!("{value}")?;
            }
        }
    }
    Ok(())
}

fn read_input(file: &PathBuf) -> Result<String, CtlError> {
    let err = |source| CtlError::ReadFile {
        path: file.clone(),
        source,
    };
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(err)?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(err)
    }
}

fn print_objects(kind: Kind, objects: &[Object], output: Output) -> Result<(), CtlError> {
    match output {
        Output::Yaml => {
            for (i, o) in objects.iter().enumerate() {
                if i > 0 {
                    outln!("---")?;
                }
                out!("{}", o.to_yaml())?;
            }
        }
        Output::Json => {
            let values: Vec<serde_json::Value> = objects
                .iter()
                .map(|o| serde_json::to_value(o).expect("serialises"))
                .collect();
            let out = if values.len() == 1 {
                serde_json::to_string_pretty(&values[0])
            } else {
                serde_json::to_string_pretty(&values)
            };
            outln!("{}", out.expect("serialises"))?;
        }
        Output::Table => out!("{}", table(kind, objects))?,
    }
    Ok(())
}

/// A fixed-width table: one row per object, columns by kind.
pub fn table(kind: Kind, objects: &[Object]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    match kind {
        Kind::Server => {
            rows.push(
                [
                    "NAME",
                    "HOSTNAME",
                    "ACCEPTED",
                    "CORDONED",
                    "ALLOCATED",
                    "CLEAN",
                    "STATE",
                ]
                .map(String::from)
                .to_vec(),
            );
            for o in objects {
                if let Object::Server(s) = o {
                    let status = s.status.clone().unwrap_or_default();
                    rows.push(vec![
                        s.metadata.name.clone(),
                        s.spec.hostname.clone().unwrap_or_default(),
                        s.spec.accepted.to_string(),
                        s.spec.cordoned.to_string(),
                        status.in_use.to_string(),
                        status.is_clean.to_string(),
                        status.state.clone().unwrap_or_default(),
                    ]);
                }
            }
        }
        _ => {
            rows.push(vec!["NAME".into()]);
            rows.extend(objects.iter().map(|o| vec![o.name().to_string()]));
        }
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}
