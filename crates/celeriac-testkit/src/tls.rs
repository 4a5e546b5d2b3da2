//! Throw-away TLS certificates: a CA, a server certificate (for `127.0.0.1` and `localhost`
//! unless other names are asked for) and a client certificate for mutual TLS, all signed by
//! the CA and written as PEM files into a directory.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// The names the server certificate covers by default.
pub(crate) const DEFAULT_SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// The PEM files of a TLS setup; one set may serve several servers (a Cluster, a Sentinel
/// setup), so that they trust each other.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    /// The CA certificate clients (and servers, of each other) must trust.
    pub(crate) ca_cert: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    /// A certificate for clients, for servers that require one (`tls-auth-clients yes`).
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

/// Generates a fresh CA, a server certificate for `server_names` (DNS names or IP
/// addresses) and a client certificate, both signed by the CA, into `dir`.
pub(crate) fn generate(dir: &Path, server_names: &[String]) -> Result<TlsFiles> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "celeriac-testkit CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(server_names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "celeriac-testkit redis-server");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Redis uses the same certificate for client connections it makes (replication, cluster
    // bus, a sentinel's links), so allow both purposes.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let server_cert = params.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "celeriac-testkit client");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.signed_by(&client_key, &issuer)?;

    let files = TlsFiles {
        ca_cert: dir.join("ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    };
    write(&files.ca_cert, &ca_cert.pem())?;
    write(&files.server_cert, &server_cert.pem())?;
    write(&files.server_key, &server_key.serialize_pem())?;
    write(&files.client_cert, &client_cert.pem())?;
    write(&files.client_key, &client_key.serialize_pem())?;
    Ok(files)
}

/// Generates a CA, a server certificate for `127.0.0.1` and `localhost` and a client
/// certificate into a new temporary directory, to be shared by several servers; the
/// directory must outlive them (a restart reads the files again).
pub(crate) fn generate_shared() -> Result<(tempfile::TempDir, TlsFiles)> {
    let dir = tempfile::Builder::new()
        .prefix("celeriac-tls-")
        .tempdir()
        .map_err(|e| Error::io("creating a temporary directory", e))?;
    let names: Vec<String> = DEFAULT_SERVER_NAMES
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    let files = generate(dir.path(), &names)?;
    Ok((dir, files))
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
