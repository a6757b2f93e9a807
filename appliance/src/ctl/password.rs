//! `appliance ctl admin set-password`: the client side of the `ConsoleAdmin` service. Reads
//! the new password from stdin (twice without echo on a terminal).
//!
//! May touch: the admin endpoint (gRPC), stdin/stderr and the terminal's echo (`stty`).

use std::path::PathBuf;

use appliance_rpc::console::SetPasswordRequest;
use appliance_rpc::console::console_admin_client::ConsoleAdminClient;

use super::{CtlArgs, CtlError, channel, outln};

/// `ctl admin set-password`.
pub(super) async fn set_password(args: &CtlArgs) -> Result<(), CtlError> {
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
