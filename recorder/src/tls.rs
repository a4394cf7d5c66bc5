//! Mutual TLS between nodes: who a peer is comes from its certificate, not from what it
//! says.
//!
//! Every node holds a certificate, signed by the cluster's CA, whose subject name is
//! [`node_name`] of its id (`node-3.retrace`). A node dialling node 3 checks that name on
//! the certificate node 3 presents (ordinary server authentication); a node accepting a
//! connection requires a client certificate from the same CA, and when the connection's
//! first frame says "I am node 3" (the `Hello`), checks that the certificate is valid for
//! `node-3.retrace` ([`peer_is`]). A forged `Hello` is refused before any frame of the
//! connection reaches the node.
//!
//! `retrace cluster` makes a throwaway CA and per-node certificates with rcgen
//! ([`generate_cluster`]); a production deployment brings its own files in the same shape
//! (`retrace node --tls-cert --tls-key --tls-ca`).

use crate::log::RecordError;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificate subject name of node `node`.
pub fn node_name(node: u32) -> String {
    format!("node-{node}.retrace")
}

/// A node's TLS configuration: as a client (dialling peers) and as a server (accepting them).
pub struct Tls {
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// Where a node's TLS files are.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsFiles {
    /// The files [`generate_cluster`] writes for node `node` in `dir`.
    pub fn in_dir(dir: &Path, node: u32) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("node-{node}.pem")),
            key: dir.join(format!("node-{node}.key")),
            ca: dir.join("ca.pem"),
        }
    }
}

impl Tls {
    /// Loads a node's certificate chain, its private key and the cluster's CA (PEM files).
    pub fn load(files: &TlsFiles) -> Result<Tls, RecordError> {
        let pem_err = |p: &Path, e: rustls::pki_types::pem::Error| format!("{}: {e}", p.display());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .map_err(|e| pem_err(&files.cert, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(&files.cert, e))?;
        if chain.is_empty() {
            return Err(format!("{}: no certificate in it", files.cert.display()).into());
        }
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_err(&files.key, e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(&files.ca).map_err(|e| pem_err(&files.ca, e))? {
            let ca = ca.map_err(|e| pem_err(&files.ca, e))?;
            roots
                .add(ca)
                .map_err(|e| format!("{}: {e}", files.ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate in it", files.ca.display()).into());
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| format!("{}: {e}", files.ca.display()))?;
        let mut server = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("{}: {e}", files.cert.display()))?;
        // Peer links are one-way (the dialler only writes): tickets would sit unread.
        server.send_tls13_tickets = 0;
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("{}: {e}", files.cert.display()))?;
        Ok(Tls {
            client: Arc::new(client),
            server: Arc::new(server),
        })
    }

    /// The name a dialler checks on node `node`'s certificate.
    pub fn server_name(node: u32) -> ServerName<'static> {
        // `node-N.retrace` is always a valid DNS name.
        ServerName::try_from(node_name(node))
            .unwrap_or_else(|_| ServerName::from(std::net::IpAddr::from([127, 0, 0, 1])))
    }
}

/// Whether the end-entity certificate a peer presented (already verified against the
/// cluster CA by the handshake) names node `node`.
pub fn peer_is(certs: Option<&[CertificateDer<'_>]>, node: u32) -> bool {
    let Some(end_entity) = certs.and_then(|c| c.first()) else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(end_entity) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_name(node)) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Writes a throwaway cluster CA and a certificate and key for each of `nodes` nodes into
/// `dir` (see [`TlsFiles::in_dir`]). Keys are written readable by their owner only.
pub fn generate_cluster(dir: &Path, nodes: usize) -> Result<(), RecordError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let e = |e: rcgen::Error| format!("generating the cluster's certificates: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "retrace throwaway cluster CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    write_file(&dir.join("ca.pem"), ca_cert.pem().as_bytes(), false)?;
    let issuer = Issuer::new(ca, ca_key);
    for node in 0..nodes as u32 {
        let key = KeyPair::generate().map_err(e)?;
        let mut params = CertificateParams::new(vec![node_name(node)]).map_err(e)?;
        params
            .distinguished_name
            .push(DnType::CommonName, node_name(node));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).map_err(e)?;
        let files = TlsFiles::in_dir(dir, node);
        write_file(&files.cert, cert.pem().as_bytes(), false)?;
        write_file(&files.key, key.serialize_pem().as_bytes(), true)?;
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    options
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("{}: {e}", path.display()))
}
