//! `AdminCerts`: enroll and revoke client certificates of the mTLS admin port
//! (`http/tls.rs`). Served on :8081 behind the admin token only, never on the mTLS port.

use appliance_rpc::admin::admin_certs_server::AdminCerts;
use appliance_rpc::admin::{EnrollReply, EnrollRequest, RevokeReply, RevokeRequest};
use tonic::{Request, Response, Status};

use crate::http::tls::{AdminTls, AdminTlsError};

#[derive(Debug, Clone)]
pub struct AdminCertsService {
    tls: AdminTls,
    /// Validity of issued client certificates.
    days: u64,
}

impl AdminCertsService {
    pub fn new(tls: AdminTls, days: u64) -> Self {
        AdminCertsService { tls, days }
    }
}

fn status(e: AdminTlsError) -> Status {
    match &e {
        AdminTlsError::BadName(_) => Status::invalid_argument(e.to_string()),
        AdminTlsError::NotEnrolled(_) => Status::not_found(e.to_string()),
        _ => {
            tracing::error!(error = %crate::error_chain(&e), "admin TLS failure");
            Status::internal(crate::error_chain(&e))
        }
    }
}

#[tonic::async_trait]
impl AdminCerts for AdminCertsService {
    async fn enroll(&self, req: Request<EnrollRequest>) -> Result<Response<EnrollReply>, Status> {
        let name = req.into_inner().name;
        let (tls, days) = (self.tls.clone(), self.days);
        let issued = tokio::task::spawn_blocking(move || tls.enroll(&name, days))
            .await
            .map_err(|e| Status::internal(format!("enroll task failed: {e}")))?
            .map_err(status)?;
        Ok(Response::new(EnrollReply {
            ca_pem: self.tls.ca_pem().to_string(),
            cert_pem: issued.cert_pem,
            key_pem: issued.key_pem,
            server_name: crate::secrets::ca::SERVER_NAME.to_string(),
        }))
    }

    async fn revoke(&self, req: Request<RevokeRequest>) -> Result<Response<RevokeReply>, Status> {
        let name = req.into_inner().name;
        let tls = self.tls.clone();
        tokio::task::spawn_blocking(move || tls.revoke(&name))
            .await
            .map_err(|e| Status::internal(format!("revoke task failed: {e}")))?
            .map_err(status)?;
        Ok(Response::new(RevokeReply {}))
    }
}
