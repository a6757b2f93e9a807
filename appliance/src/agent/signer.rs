//! The agent's side of authenticated first contact (`protocol::first_contact`): an ed25519
//! key generated for this boot (in memory only: every PXE boot is a fresh initramfs and a
//! fresh key), a sequence counter, the boot token from the kernel command line, and
//! [`SignedClient`], the agent API client whose every call carries `appliance-seq` and
//! `appliance-sig`; CreateServer also carries `appliance-agent-key` and, until a registration
//! succeeded, `appliance-boot-token`. A Sidero box ignores the metadata.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use appliance_rpc::agent::agent_client::AgentClient;
use appliance_rpc::agent::{self as pb};
use prost::Message;
use ring::signature::{Ed25519KeyPair, KeyPair};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::protocol::first_contact::{MD_KEY, MD_SEQ, MD_SIG, MD_TOKEN, call_message, method};

/// This boot's key, sequence counter and boot token.
#[derive(Debug)]
pub struct Signer {
    key: Ed25519KeyPair,
    seq: AtomicU64,
    token: Mutex<Option<String>>,
}

impl Signer {
    /// A signer with a key from 32 `seed` bytes (the caller takes them from the OS).
    pub fn new(seed: [u8; 32], token: Option<String>) -> Signer {
        Signer {
            key: Ed25519KeyPair::from_seed_unchecked(&seed).expect("32-byte ed25519 seed"),
            seq: AtomicU64::new(0),
            token: Mutex::new(token),
        }
    }

    /// A signer with a key from the OS's random source.
    pub fn generate(token: Option<String>) -> Result<Signer, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)?;
        Ok(Signer::new(seed, token))
    }

    /// The public key, 64 hex digits.
    pub fn public_key(&self) -> String {
        hex::encode(self.key.public_key().as_ref())
    }

    /// `msg` as a request for `method` carrying the sequence number and signature (and on
    /// CreateServer the key and the boot token).
    pub fn request<T: Message>(&self, method: &str, msg: T) -> Request<T> {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let sig = self
            .key
            .sign(&call_message(method, seq, &msg.encode_to_vec()));
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        md.insert(MD_SEQ, ascii(&seq.to_string()));
        md.insert(MD_SIG, ascii(&hex::encode(sig.as_ref())));
        if method == method::CREATE_SERVER {
            md.insert(MD_KEY, ascii(&self.public_key()));
            if let Some(t) = self.token.lock().expect("token lock").as_deref() {
                md.insert(MD_TOKEN, ascii(t));
            }
        }
        r
    }

    /// A registration succeeded: the token is used up, later registrations of this boot go
    /// by the pinned key alone.
    pub fn registered(&self) {
        self.token.lock().expect("token lock").take();
    }
}

fn ascii(s: &str) -> MetadataValue<tonic::metadata::Ascii> {
    // Hex digits and decimal numbers only: always valid metadata.
    MetadataValue::try_from(s).expect("ASCII metadata")
}

/// The agent API client with every call signed.
#[derive(Debug, Clone)]
pub struct SignedClient {
    inner: AgentClient<Channel>,
    signer: Arc<Signer>,
}

impl SignedClient {
    pub fn new(inner: AgentClient<Channel>, signer: Arc<Signer>) -> SignedClient {
        SignedClient { inner, signer }
    }

    pub async fn create_server(
        &mut self,
        r: pb::CreateServerRequest,
    ) -> Result<Response<pb::CreateServerResponse>, Status> {
        let out = self
            .inner
            .create_server(self.signer.request(method::CREATE_SERVER, r))
            .await;
        if out.is_ok() {
            self.signer.registered();
        }
        out
    }

    pub async fn reconcile_server_addresses(
        &mut self,
        r: pb::ReconcileServerAddressesRequest,
    ) -> Result<Response<pb::ReconcileServerAddressesResponse>, Status> {
        let req = self.signer.request(method::RECONCILE_SERVER_ADDRESSES, r);
        self.inner.reconcile_server_addresses(req).await
    }

    pub async fn heartbeat(
        &mut self,
        r: pb::HeartbeatRequest,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = self.signer.request(method::HEARTBEAT, r);
        self.inner.heartbeat(req).await
    }

    pub async fn update_bmc_info(
        &mut self,
        r: pb::UpdateBmcInfoRequest,
    ) -> Result<Response<pb::UpdateBmcInfoResponse>, Status> {
        let req = self.signer.request(method::UPDATE_BMC_INFO, r);
        self.inner.update_bmc_info(req).await
    }

    pub async fn mark_server_as_wiped(
        &mut self,
        r: pb::MarkServerAsWipedRequest,
    ) -> Result<Response<pb::MarkServerAsWipedResponse>, Status> {
        let req = self.signer.request(method::MARK_SERVER_AS_WIPED, r);
        self.inner.mark_server_as_wiped(req).await
    }

    pub async fn next_action(
        &mut self,
        r: pb::NextActionRequest,
    ) -> Result<Response<pb::NextActionResponse>, Status> {
        let req = self.signer.request(method::NEXT_ACTION, r);
        self.inner.next_action(req).await
    }

    pub async fn report_wipe_progress(
        &mut self,
        r: pb::ReportWipeProgressRequest,
    ) -> Result<Response<pb::ReportWipeProgressResponse>, Status> {
        let req = self.signer.request(method::REPORT_WIPE_PROGRESS, r);
        self.inner.report_wipe_progress(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::first_contact::{AgentKey, parse_signature, verify_call};

    #[test]
    fn requests_carry_a_verifiable_signature_and_the_token_until_registered() {
        let s = Signer::new([5; 32], Some("ab".repeat(32)));
        let msg = pb::HeartbeatRequest { uuid: "u".into() };
        let md =
            |r: &Request<_>, k: &str| r.metadata().get(k).map(|v| v.to_str().unwrap().to_string());
        let key: AgentKey = s.public_key().parse().unwrap();
        let r1 = s.request(method::CREATE_SERVER, msg.clone());
        assert_eq!(md(&r1, MD_TOKEN), Some("ab".repeat(32)));
        assert_eq!(md(&r1, MD_KEY), Some(key.to_string()));
        let (seq, sig) =
            parse_signature(md(&r1, MD_SEQ).as_deref(), md(&r1, MD_SIG).as_deref()).unwrap();
        assert_eq!(seq, 1);
        verify_call(&key, method::CREATE_SERVER, seq, &msg.encode_to_vec(), &sig).unwrap();
        let r2 = s.request(method::HEARTBEAT, msg.clone());
        assert_eq!(md(&r2, MD_KEY), None, "the key goes with CreateServer only");
        let (seq, sig) =
            parse_signature(md(&r2, MD_SEQ).as_deref(), md(&r2, MD_SIG).as_deref()).unwrap();
        assert_eq!(seq, 2);
        verify_call(&key, method::HEARTBEAT, seq, &msg.encode_to_vec(), &sig).unwrap();
        s.registered();
        assert_eq!(md(&s.request(method::CREATE_SERVER, msg), MD_TOKEN), None);
    }
}
