//! The console-admin gRPC service (`appliance.console.v1.ConsoleAdmin`): sets the web
//! console password for `appliance ctl admin set-password`. Behind the admin token.
//! The work (hash, store, end sessions) is done by `http::console::ConsoleState`.

use appliance_rpc::console::console_admin_server::ConsoleAdmin;
use appliance_rpc::console::{SetPasswordReply, SetPasswordRequest};
use tonic::{Request, Response, Status};

use crate::console::password::SetPasswordError;
use crate::http::console::{ConsoleState, SetConsolePasswordError};

#[derive(Debug, Clone)]
pub struct ConsoleAdminService {
    console: ConsoleState,
}

impl ConsoleAdminService {
    pub fn new(console: ConsoleState) -> Self {
        ConsoleAdminService { console }
    }
}

#[tonic::async_trait]
impl ConsoleAdmin for ConsoleAdminService {
    async fn set_password(
        &self,
        req: Request<SetPasswordRequest>,
    ) -> Result<Response<SetPasswordReply>, Status> {
        let password = req.into_inner().password;
        match self.console.set_password(password).await {
            Ok(sessions_ended) => Ok(Response::new(SetPasswordReply {
                sessions_ended: sessions_ended as u64,
            })),
            Err(SetConsolePasswordError::Policy(
                e @ (SetPasswordError::TooShort { .. } | SetPasswordError::TooLong),
            )) => Err(Status::invalid_argument(e.to_string())),
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "setting the console password failed");
                Err(Status::internal(crate::error_chain(&e)))
            }
        }
    }
}
