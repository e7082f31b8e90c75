//! Certificates and keys for a test control plane, generated fresh per start.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// Files written by [`generate`].
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (trusted by clients, and used by the API server to verify client certs).
    pub ca_cert: PathBuf,
    /// API server serving certificate (SANs: 127.0.0.1, localhost, kubernetes.default.svc).
    pub serving_cert: PathBuf,
    /// API server serving key.
    pub serving_key: PathBuf,
    /// Admin client certificate (O=system:masters).
    pub admin_cert: PathBuf,
    /// Admin client key.
    pub admin_key: PathBuf,
    /// ServiceAccount token signing key (private, PKCS#8).
    pub sa_signing_key: PathBuf,
    /// ServiceAccount token verification key (public, SPKI).
    pub sa_public_key: PathBuf,
}

/// Common name of the admin client certificate.
pub const ADMIN_USER: &str = "nodemedic-test-admin";

/// Generate a CA, serving and admin client certificates and a ServiceAccount key pair in `dir`.
pub fn generate(dir: &Path) -> Result<Pki> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "nodemedic-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving_params = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving_params.signed_by(&serving_key, &issuer)?;

    let admin_key = KeyPair::generate()?;
    let mut admin_params = CertificateParams::new(Vec::<String>::new())?;
    admin_params
        .distinguished_name
        .push(DnType::CommonName, ADMIN_USER);
    admin_params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    admin_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin_params.signed_by(&admin_key, &issuer)?;

    let sa_key = KeyPair::generate()?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_signing_key: dir.join("sa.key"),
        sa_public_key: dir.join("sa.pub"),
    };
    write(&pki.ca_cert, &ca_cert.pem())?;
    write(&pki.serving_cert, &serving_cert.pem())?;
    write(&pki.serving_key, &serving_key.serialize_pem())?;
    write(&pki.admin_cert, &admin_cert.pem())?;
    write(&pki.admin_key, &admin_key.serialize_pem())?;
    write(&pki.sa_signing_key, &sa_key.serialize_pem())?;
    write(&pki.sa_public_key, &sa_key.public_key_pem())?;
    Ok(pki)
}

fn write(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_all_files_as_pem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = generate(dir.path()).expect("generate pki");
        for (path, marker) in [
            (&pki.ca_cert, "BEGIN CERTIFICATE"),
            (&pki.serving_cert, "BEGIN CERTIFICATE"),
            (&pki.admin_cert, "BEGIN CERTIFICATE"),
            (&pki.serving_key, "BEGIN PRIVATE KEY"),
            (&pki.admin_key, "BEGIN PRIVATE KEY"),
            (&pki.sa_signing_key, "BEGIN PRIVATE KEY"),
            (&pki.sa_public_key, "BEGIN PUBLIC KEY"),
        ] {
            let text = std::fs::read_to_string(path).expect("read generated file");
            assert!(text.contains(marker), "{} lacks {marker}", path.display());
        }
    }
}
