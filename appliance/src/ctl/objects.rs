//! `appliance ctl status | apply | get [--watch] | delete | server list|get|delete|accept|
//! cordon|uncordon`: the client side of the Admin service, and the printers of objects
//! (table, YAML, JSON).
//!
//! May touch: the admin endpoint (gRPC), stdin and the file given to `apply`.

use std::path::Path;

use appliance_rpc::admin::admin_client::AdminClient;
use appliance_rpc::admin::{
    ApplyRequest, ChangeType, DeleteRequest, GetRequest, Object as PbObject, ServerActionKind,
    ServerActionRequest, StatusRequest, WatchRequest,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{AddToken, CtlArgs, CtlError, channel, out, outln, read_input};
use crate::cli::Output;
use crate::model::{Kind, Object};

type Client = AdminClient<InterceptedService<Channel, AddToken>>;

async fn connect(args: &CtlArgs) -> Result<Client, CtlError> {
    let (channel, add_token) = channel(args).await?;
    Ok(AdminClient::with_interceptor(channel, add_token))
}

fn parse_kind(s: &str) -> Result<Kind, CtlError> {
    Kind::parse_cli(s).ok_or_else(|| CtlError::Kind(s.to_string()))
}

/// `ctl status`.
pub(super) async fn status(args: &CtlArgs) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
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
    Ok(())
}

/// `ctl apply -f FILE [--dry-run]`.
pub(super) async fn apply(args: &CtlArgs, file: &Path, dry_run: bool) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let documents = read_input(file)?;
    let reply = client
        .apply(ApplyRequest { documents, dry_run })
        .await?
        .into_inner();
    for a in reply.applied {
        outln!("{}/{} {}", a.kind.to_lowercase(), a.name, a.result)?;
    }
    Ok(())
}

/// `ctl get KIND [NAME] [-o …] [--watch [--since-revision N]]`.
pub(super) async fn get(
    args: &CtlArgs,
    kind: &str,
    name: String,
    output: Output,
    watch: bool,
    since_revision: Option<u64>,
) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let kind = parse_kind(kind)?;
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
    Ok(())
}

/// `ctl delete KIND NAME`.
pub(super) async fn delete(args: &CtlArgs, kind: &str, name: &str) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let kind = parse_kind(kind)?;
    client
        .delete(DeleteRequest {
            kind: kind.to_string(),
            name: name.to_string(),
        })
        .await?;
    outln!("{}/{name} deleted", kind.as_str().to_lowercase())?;
    Ok(())
}

/// `ctl server list`: the table of all servers.
pub(super) async fn server_list(args: &CtlArgs) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let objects = get_objects(&mut client, Kind::Server, String::new()).await?;
    print_objects(Kind::Server, &objects, Output::Table)
}

/// `ctl server get NAME [-o …]`.
pub(super) async fn server_get(args: &CtlArgs, name: &str, output: Output) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let objects = get_objects(&mut client, Kind::Server, name.to_string()).await?;
    print_objects(Kind::Server, &objects, output)
}

/// `ctl server delete NAME`.
pub(super) async fn server_delete(args: &CtlArgs, name: &str) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    client
        .delete(DeleteRequest {
            kind: Kind::Server.to_string(),
            name: name.to_string(),
        })
        .await?;
    outln!("server/{name} deleted")?;
    Ok(())
}

/// The operator's decisions on one server (`ctl server accept|cordon|uncordon`).
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    Accept,
    Cordon,
    Uncordon,
    /// Approve a new agent key.
    Rekey,
}

/// `ctl server accept|cordon|uncordon|rekey NAME`.
pub(super) async fn server_action(
    args: &CtlArgs,
    name: &str,
    action: Action,
) -> Result<(), CtlError> {
    let (kind, verb) = match action {
        Action::Accept => (ServerActionKind::ServerActionAccept, "accepted"),
        Action::Cordon => (ServerActionKind::ServerActionCordon, "cordoned"),
        Action::Uncordon => (ServerActionKind::ServerActionUncordon, "uncordoned"),
        Action::Rekey => (
            ServerActionKind::ServerActionRekey,
            "may pin a new agent key at its next boot",
        ),
    };
    let mut client = connect(args).await?;
    client
        .server_action(ServerActionRequest {
            name: name.to_string(),
            action: kind as i32,
        })
        .await?;
    outln!("server/{name} {verb}")?;
    Ok(())
}

async fn get_objects(
    client: &mut Client,
    kind: Kind,
    name: String,
) -> Result<Vec<Object>, CtlError> {
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
                    "FIRMWARE",
                    "SECURE-BOOT",
                ]
                .map(String::from)
                .to_vec(),
            );
            for o in objects {
                if let Object::Server(s) = o {
                    let status = s.status.clone().unwrap_or_default();
                    let firmware = s
                        .spec
                        .hardware
                        .as_ref()
                        .and_then(|h| h.firmware.clone())
                        .unwrap_or_default();
                    rows.push(vec![
                        s.metadata.name.clone(),
                        s.spec.hostname.clone().unwrap_or_default(),
                        s.spec.accepted.to_string(),
                        s.spec.cordoned.to_string(),
                        status.in_use.to_string(),
                        status.is_clean.to_string(),
                        status.state.clone().unwrap_or_default(),
                        firmware.kind.map_or("", |k| k.as_str()).to_string(),
                        firmware.secure_boot.map_or("", |b| b.as_str()).to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_documents;

    #[test]
    fn server_table_has_firmware_and_secure_boot_columns() {
        let objects = parse_documents(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: a}\nspec:\n  accepted: true\n  hardware: {firmware: {kind: uefi, secureBoot: enabled}}\n---\napiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: b}\nspec: {accepted: false}\n",
        )
        .unwrap();
        let t = table(Kind::Server, &objects);
        let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(rows[0][7..], ["FIRMWARE", "SECURE-BOOT"], "{t}");
        assert_eq!(
            rows[1],
            ["a", "true", "false", "false", "false", "uefi", "enabled"],
            "{t}"
        );
        // Not reported (a Sidero agent): the columns stay empty.
        assert_eq!(rows[2], ["b", "false", "false", "false", "false"], "{t}");
    }
}
